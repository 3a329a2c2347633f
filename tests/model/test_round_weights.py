"""EMAWeights against a hand-computed EMA; BestWeights leaves the best validated (EMA) weights."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.model.callbacks import BestWeights
from al_lightning.model.mace import MACEConfig
from al_lightning.model.module import MACEModule

TINY = MACEConfig(hidden_irreps="8x0e+8x1o", mlp_irreps="8x0e", radial_mlp=[16, 16], max_ell=1, r_max=4.0)


class Recorder(pl.Callback):
    """Raw parameters after every optimizer step and val/loss after every validation."""

    def __init__(self):
        self.steps, self.val_losses = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append([p.detach().clone() for p in pl_module.net.parameters()])

    def on_validation_end(self, trainer, pl_module):
        self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


def _trainer(epochs, *callbacks, checkpointing=False):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=checkpointing,
                      inference_mode=False, use_distributed_sampler=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=list(callbacks))


def _setup(tiny_spec, **kw):
    pl.seed_everything(0)
    module = MACEModule(model=TINY, dtype="float64", **kw)
    dm = ActiveDataModule(emt=tiny_spec, batch_size=4, eval_batch_size=16)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    return module, dm


def _val_loss(module, dm):
    trainer = _trainer(1)
    trainer.validate(module, datamodule=dm, verbose=False)
    return float(trainer.callback_metrics["val/loss"])


def test_ema_is_left_in_the_net_and_is_what_was_validated(tiny_spec, tiny_paths):
    decay = 0.9  # 0.9: averaging the int buffers would turn Cu (29) into 28
    module, dm = _setup(tiny_spec, ema_decay=decay)
    buffers = {k: v.clone() for k, v in module.net.named_buffers()}
    rec = Recorder()
    _trainer(2, rec).fit(module, datamodule=dm)
    for k, v in module.net.named_buffers():  # averaging int buffers in floats truncates atomic numbers
        assert torch.equal(v, buffers[k]), k
    ema = [p.clone() for p in rec.steps[0]]  # W_0 = the first step's weights, then lerp
    for step in rec.steps[1:]:
        ema = [decay * e + (1 - decay) * w for e, w in zip(ema, step)]
    for got, want in zip(module.net.parameters(), ema):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-14)
    assert not all(torch.equal(p, w) for p, w in zip(module.net.parameters(), rec.steps[-1]))  # not the raw iterate
    assert _val_loss(module, dm) == pytest.approx(rec.val_losses[-1], rel=1e-12)  # validation ran on the EMA


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_best_weights_restores_the_best_validated_epoch(tiny_spec, tiny_paths, ema_decay):
    module, dm = _setup(tiny_spec, ema_decay=ema_decay, lr=0.05)
    rec, best = Recorder(), BestWeights()
    _trainer(6, rec, best, checkpointing=True).fit(module, datamodule=dm)
    losses = rec.val_losses
    assert int(np.argmin(losses)) != len(losses) - 1, losses  # the case where restoring matters
    assert best.best_epoch == int(np.argmin(losses)) and best.best_score == min(losses)
    assert best.best_metrics["val/loss"] == min(losses)
    assert _val_loss(module, dm) == pytest.approx(min(losses), rel=1e-12)
