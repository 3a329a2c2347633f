"""Fitting the demo model config on a small dataset lowers test_id/forces_mae to <= 0.7x epoch 1."""

import copy

import lightning.pytorch as pl
import pytest
import torch
import yaml

from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.model.mace import MACEConfig
from al_lightning.model.module import MACEModule
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _trainer(epochs):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      inference_mode=False, use_distributed_sampler=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)


def _test_forces_mae(module, dm):
    trainer = _trainer(1)
    trainer.test(module, datamodule=dm, verbose=False)
    return float(trainer.callback_metrics["test_id/forces_mae"])


@pytest.mark.slow
def test_demo_model_fit_reduces_force_error(tiny_spec, tiny_paths):
    """The demo's model settings (the shipped backbone, fine-tuned) learn on tiny data."""
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["model"]
    pl.seed_everything(0)
    if "model" in demo:
        demo["model"] = MACEConfig(**demo["model"])
    module = MACEModule(**demo)
    dm = ActiveDataModule(emt=tiny_spec, batch_size=4, eval_batch_size=16)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    before = copy.deepcopy(module.net.state_dict())
    _trainer(1).fit(module, datamodule=dm)
    first = _test_forces_mae(module, dm)
    _trainer(40).fit(module, datamodule=dm)
    last = _test_forces_mae(module, dm)
    assert last <= 0.7 * first, (first, last)
    assert any(not torch.equal(before[k], v) for k, v in module.net.state_dict().items())

