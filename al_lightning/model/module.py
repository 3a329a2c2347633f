"""MACEModule: a small LightningModule around a mace-torch model (one shared step).

The network is built in :meth:`MACEModule.build` from the labeled set (E0s, avg neighbours,
scale/shift) or loaded from a foundation file; :meth:`setup` calls it when the datamodule is
attached to the trainer. Forces need autograd in every stage: use
``Trainer(inference_mode=False)`` (the CLI does).

EMA (``ema_decay``): :meth:`MACEModule.configure_callbacks` adds
:class:`~al_lightning.model.callbacks.EMAWeights` to every fit. Validation runs on the
averaged weights and at the end of the fit they are copied into ``net``, so the test metrics,
the exported model, checkpoints and the acquisition pass all use the EMA weights, and a
warm-started next fit (the next campaign round) continues from the EMA weights, not from the
raw optimizer iterate.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Dict, List, Literal, Optional, Sequence, Union

import lightning.pytorch as pl
import numpy as np
import torch

from al_lightning import faults
from al_lightning import keys as K
from al_lightning.console import say
from al_lightning.model.e0s import decide_e0s, zero_shot
from al_lightning.model.loss import energy_force_loss
from al_lightning.model.mace import (MACEConfig, build_mace, fit_e0s, graph_statistics, load_foundation,
                                     model_e0s, model_heads, model_r_max, model_z_table, replay_heads, set_e0s,
                                     set_trainable, z_table_from)
from al_lightning.model.metrics import SplitMetrics
from al_lightning.model.replay import ReplayConfig


class MACEModule(pl.LightningModule):
    """Fine-tunes a MACE model on a per-atom energy + force loss.

    Args:
        model: architecture of a freshly built model (ignored when ``foundation`` is set).
        foundation: path of a MACE ``.model`` file to fine-tune (the eager file, not mace's
            TorchScript ``*_compiled.model``; it is unpickled: use trusted files only), or the name
            of a backbone installed with the package: ``emt`` (EMT catalysis) or ``xtb`` (molecules).
        head: head of a multi-head foundation to fine-tune (default, as mace: the first head
            that is not ``pt_head``); the model is reduced to that head, unless ``replay`` is on: then
            it keeps its heads, and replay frames train ``replay.head`` (see :mod:`al_lightning.model.replay`).
        elements: element symbols the model covers (default: those of the datamodule).
        e0s: per-element reference energies. From scratch: a ``{symbol: eV}`` dict, or None
            (least squares on the labeled set). With a foundation: ``"auto"`` (default, also for
            None: measure the foundation zero-shot on the initial labels and refit its E0s when
            they sit on another energy reference, see :mod:`al_lightning.model.e0s`; one
            console line ``E0s: …`` says what was done and why), ``"foundation"`` (keep its
            E0s; right when the labels come from the foundation's level of theory),
            ``"refit"`` (foundation E0 + least-squares correction of E_ref − E_model on the
            labeled set, mace's ``--E0s estimated``; for labels from another level of theory),
            or a dict replacing the E0s of the elements it names.
        trainable: fnmatch patterns of trained parameters (default: all).
        energy_weight: loss weight w_E of the per-atom energy error (also scales the NTK-EF energy rows).
        forces_weight: loss weight w_F of the force error (also scales the NTK-EF force rows).
        loss: "mse" or "huber".
        huber_delta: the Huber loss's threshold, in eV/atom for energies and eV/Å for forces.
        lr: AdamW learning rate; None: 1e-2 from scratch, 1e-3 when fine-tuning a foundation
            (mace's fine-tuning guidance: naive fine-tuning and layer freezing 1e-3, from scratch 1e-2).
        weight_decay: AdamW weight decay.
        amsgrad: AdamW's AMSGrad variant.
        scheduler_patience: epochs without a ``val/loss`` improvement before the plateau scheduler
            lowers the learning rate.
        scheduler_factor: factor the plateau scheduler multiplies the learning rate by.
        ema_decay: exponential moving average of the weights (None: off): validated, and left in
            ``net`` at the end of every fit (see the module docstring).
        replay: foundation replay in every fit and the ``test_foundation`` split that measures
            retention (:class:`al_lightning.model.replay.ReplayConfig`: ``source`` pretraining |
            pseudolabel | null, ``weight``, ``ratio``, ``size``, ``test_size``, ``structures``, ``seed``,
            ``head``).
        dtype: "float32" or "float64" (set before data and model are built).
    """

    def __init__(self, model: Optional[MACEConfig] = None, foundation: Optional[str] = None,
                 head: Optional[str] = None, elements: Optional[List[str]] = None,
                 e0s: Union[Dict[str, float], Literal["auto", "foundation", "refit"], None] = None,
                 trainable: Optional[List[str]] = None, energy_weight: float = 1.0, forces_weight: float = 10.0,
                 loss: str = "mse", huber_delta: float = 0.01, lr: Optional[float] = None, weight_decay: float = 5e-7,
                 amsgrad: bool = True, scheduler_patience: int = 5, scheduler_factor: float = 0.8,
                 ema_decay: Optional[float] = None, replay: ReplayConfig = ReplayConfig(),
                 dtype: str = "float64") -> None:
        super().__init__()
        if loss not in ("mse", "huber"):
            raise ValueError(f"model loss must be 'mse' or 'huber', got {loss!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"model dtype must be 'float32' or 'float64', got {dtype!r}")
        if energy_weight < 0 or forces_weight < 0 or energy_weight + forces_weight == 0:
            raise ValueError("model energy_weight/forces_weight must be >= 0 and not both 0")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model ema_decay must be in (0, 1), got {ema_decay}")
        _check_foundation_options(foundation, head, e0s, lr)
        self.replay = replay
        if self.replay.source and not foundation:
            raise ValueError("model.replay needs model.foundation (replay keeps what a foundation knew)")
        self.save_hyperparameters(ignore=["replay"])
        if lr is None:
            self.hparams.lr = FOUNDATION_LR if foundation else SCRATCH_LR
        self.cfg = model or MACEConfig()
        torch.set_default_dtype(getattr(torch, dtype))
        self.net: Optional[torch.nn.Module] = None
        self.split_metrics = torch.nn.ModuleDict()
        self.eval_splits: List[str] = ["val"]
        self.initial_state: Optional[dict] = None
        self.feature_map = None  # set by :meth:`predicting_features` (acquisition passes)
        self.head_pair: Optional[tuple] = None  # (campaign head, replay head) of a two-head replay net

    # ---------------------------------------------------------------- construction
    @property
    def r_max(self) -> float:
        return model_r_max(self.net) if self.net is not None else self.cfg.r_max

    def z_table(self, datamodule=None):
        if self.net is not None:
            return model_z_table(self.net)
        if self.hparams.foundation:
            return model_z_table(load_foundation(self.hparams.foundation, self.hparams.head))
        elements = self.hparams.elements or (datamodule.elements() if datamodule is not None else None)
        if not elements:
            raise ValueError("model elements unknown: set model.elements or use a datamodule that lists them")
        return z_table_from(elements)

    def build(self, datamodule) -> None:
        """Create the network (once) from the datamodule's labeled set, and the metrics."""
        if self.net is None:
            if self.hparams.foundation:
                self.net = self._load_foundation().train()  # saved in eval mode
                self._attach(datamodule)
                self._foundation_e0s(datamodule)
            else:
                z_table = self.z_table(datamodule)
                datamodule.attach(z_table, self.cfg.r_max)
                e0s = self._e0s(z_table, datamodule.labeled_structures())
                stats = graph_statistics(datamodule.stats_dataloader(), e0s)
                self.net = build_mace(self.cfg, z_table, e0s, stats)
            set_trainable(self.net, self.hparams.trainable)
            self.initial_state = copy.deepcopy(self.net.state_dict())
        self._attach(datamodule)
        if self.replay.source and datamodule.replay is None:
            self._attach_replay(datamodule)
        if not datamodule.has_forces and self.hparams.forces_weight > 0:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn("the data has no forces (energy-only): the force loss and force metrics are off")
        self.eval_splits = ["val", *datamodule.test_splits]
        for split in self.eval_splits:
            if split not in self.split_metrics:
                self.split_metrics[split] = SplitMetrics()

    def _load_foundation(self) -> torch.nn.Module:
        """The foundation: one head, or with replay on a multi-head file all its heads (:attr:`head_pair`)."""
        foundation, head = self.hparams.foundation, self.hparams.head
        if not self.replay.source:
            return load_foundation(foundation, head)
        net = load_foundation(foundation, head, keep_heads=True)
        self.head_pair = replay_heads(net, head, self.replay.head, foundation)
        return net

    def _attach(self, datamodule) -> None:
        """Tell the datamodule the net's z table, cutoff and (two-head replay) heads and campaign head."""
        heads = (model_heads(self.net), self.head_pair[0]) if self.head_pair else (None, None)
        datamodule.attach(model_z_table(self.net), model_r_max(self.net), *heads)

    @property
    def campaign_head(self) -> Optional[int]:
        """Index of the campaign head in a two-head replay net (its E0 row); None: a single-head net."""
        return model_heads(self.net).index(self.head_pair[0]) if self.head_pair else None

    def _e0s(self, z_table, structures) -> np.ndarray:
        """(n_elements,) E0s of a model built from scratch: given per element, or fitted."""
        given = self.hparams.e0s
        if not given:
            return fit_e0s(structures, z_table)
        missing = [_symbol(z) for z in z_table.zs if _symbol(z) not in given]
        if missing:
            raise ValueError(f"model e0s missing elements {missing}")
        return np.array([given[_symbol(z)] for z in z_table.zs], dtype=float)

    def _foundation_e0s(self, datamodule) -> None:
        """Decide ("auto"), keep ("foundation"), re-estimate ("refit") or overwrite (dict) the
        loaded net's E0s (a two-head replay net: the campaign head's; the replay head keeps its own)."""
        given, head = self.hparams.e0s or "auto", self.campaign_head
        if given == "foundation":
            return
        if given in ("auto", "refit"):
            stats = zero_shot(self.net, datamodule.stats_dataloader())
            refit, line, poor = decide_e0s(stats)
            if given == "refit" or refit:
                set_e0s(self.net, model_e0s(self.net, head) + stats["delta"], head)
            if self.global_rank == 0:
                say(line if given == "auto" else "E0s: refit (model.e0s: refit)")
                if poor:
                    say(poor)
            return
        zs = model_z_table(self.net).zs
        unknown = sorted(set(given) - {_symbol(z) for z in zs})
        if unknown:
            raise ValueError(f"model e0s name elements {unknown} that the foundation does not cover "
                             f"({[_symbol(z) for z in zs]})")
        set_e0s(self.net, [given.get(_symbol(z), e) for z, e in zip(zs, model_e0s(self.net, head))], head)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            self.build(dm)
        elif self.net is None:
            raise RuntimeError("MACEModule needs a datamodule (or call build()) before use")

    def _attach_replay(self, datamodule) -> None:
        """The replay set and test_foundation split (model/replay.py), from the frozen foundation."""
        from al_lightning.model import replay

        cfg, reserved = self.replay, ()
        head = self.head_pair[1] if self.head_pair else None
        if head:
            cfg = dataclasses.replace(cfg, head=head)  # the pseudolabels' head (and cache key), as resolved
        if cfg.source == "pretraining":
            files = replay.pretraining_files(cfg, self.hparams.foundation)
        else:
            self.net.load_state_dict(self.initial_state)  # the frozen foundation (E0s as decided)
            files, reserved = replay.pseudolabel_files(cfg, self.net, datamodule)
        datamodule.attach_replay(files, cfg.weight, cfg.ratio, cfg.seed, reserved, head)

    # ---------------------------------------------------------------- forward / step
    def forward(self, batch, training: bool = False) -> Dict[str, torch.Tensor]:
        data = batch.to_dict() if hasattr(batch, "to_dict") else batch
        return self.net(data, training=training, compute_force=True)

    def shared_step(self, batch, split: str) -> torch.Tensor:
        """Loss (and metrics for evaluation splits) of one batch; ``split`` "train" trains."""
        training = split == "train"
        with torch.enable_grad():
            out = self(batch, training=training)
        losses = energy_force_loss(
            out[K.OUT_ENERGY], batch[K.ENERGY], out[K.OUT_FORCES], batch[K.FORCES], batch[K.NUM_ATOMS],
            batch[K.BATCH], batch[K.FREE_MASK], batch[K.ENERGY_WEIGHT], batch[K.FORCES_WEIGHT],
            self.hparams.energy_weight, self.hparams.forces_weight, self.hparams.loss, self.hparams.huber_delta)
        n = int(batch[K.NUM_ATOMS].numel())
        log = dict(batch_size=n, sync_dist=not training, on_step=training, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{split}/loss", losses["loss"].detach(), prog_bar=training, **log)  # the bar: loss, val force MAE
        self.log_dict({f"{split}/loss_energy": losses["energy"].detach(),
                       f"{split}/loss_forces": losses["forces"].detach()}, **log)
        if not training:
            atom_mask = batch[K.FREE_MASK] & (batch[K.FORCES_WEIGHT][batch[K.BATCH]] > 0)
            self.split_metrics[split].update(out[K.OUT_ENERGY], batch[K.ENERGY], batch[K.NUM_ATOMS],
                                             batch[K.ENERGY_WEIGHT], out[K.OUT_FORCES], batch[K.FORCES], atom_mask)
        return losses["loss"]

    def training_step(self, batch, batch_idx):
        return self.shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self.shared_step(batch, self.trainer.datamodule.test_splits[dataloader_idx])

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        faults.hit("fit")  # the crash-resume tests' hook (no-op without a fault plugin)

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        faults.hit("test")

    def predict_step(self, batch, batch_idx: int = 0, dataloader_idx: int = 0):
        """One batch's predictions, detached and on the batch's device: ``{"energy": (G,),
        "forces": (N, 3)}``, or — inside :meth:`predicting_features` — the acquisition feature
        rows of that map (:class:`~al_lightning.features.PoolRows`: ids, rows, LCMD vectors,
        energies and forces of the same forward; docs/design.md §4). Autograd is on (forces and
        NTK rows need it), so predict with ``Trainer(inference_mode=False)``."""
        with torch.enable_grad():
            if self.feature_map is None:
                out = self(batch)
                return {K.OUT_ENERGY: out[K.OUT_ENERGY].detach(), K.OUT_FORCES: out[K.OUT_FORCES].detach()}
            rows = self.feature_map.rows(self.net, batch, float(self.hparams.energy_weight),
                                         float(self.hparams.forces_weight))
        return type(rows)(*(t.detach() for t in rows))

    @contextlib.contextmanager
    def predicting_features(self, feature_map):
        """Within the block :meth:`predict_step` returns the rows of ``feature_map`` (a
        :class:`~al_lightning.features.FeatureMap`; None: plain predictions)."""
        before, self.feature_map = self.feature_map, feature_map
        try:
            yield self
        finally:
            self.feature_map = before

    def _log_split_metrics(self, splits: Sequence[str]) -> None:
        for split in splits:
            values = self.split_metrics[split].compute()
            for k, v in values.items():
                self.log(f"{split}/{k}", v, sync_dist=False, add_dataloader_idx=False,
                         prog_bar=(split == "val" and k == "forces_mae"))
            self.split_metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_split_metrics(["val"])

    def on_test_epoch_end(self) -> None:
        self._log_split_metrics(self.trainer.datamodule.test_splits)

    # ---------------------------------------------------------------- EMA
    def configure_callbacks(self):
        """EMA of the weights when ``ema_decay`` is set (a fresh average per fit; nothing to do in test)."""
        if not self.hparams.ema_decay or self.trainer.state.fn != "fit":
            return []
        from al_lightning.model.callbacks import EMAWeights

        return [EMAWeights(self.hparams.ema_decay)]

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                amsgrad=self.hparams.amsgrad)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=self.hparams.scheduler_factor,
                                                           patience=self.hparams.scheduler_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "strict": False}}

    def reset_weights(self) -> None:
        """Back to the foundation / initial weights (a campaign round without warm start)."""
        self.net.load_state_dict(self.initial_state)


SCRATCH_LR, FOUNDATION_LR = 1e-2, 1e-3


def _check_foundation_options(foundation, head, e0s, lr) -> None:
    """One-line errors for options that need (or contradict) a foundation."""
    if isinstance(e0s, str):
        if e0s not in ("auto", "foundation", "refit"):
            raise ValueError(f"model e0s must be a {{symbol: eV}} dict, 'auto', 'foundation' or 'refit', got {e0s!r}")
        if not foundation:
            raise ValueError(f"model e0s {e0s!r} needs model.foundation (from scratch E0s are fitted or given)")
    if head is not None and not foundation:
        raise ValueError("model head needs model.foundation (a multi-head MACE file)")
    if lr is not None and not lr > 0:
        raise ValueError(f"model lr must be > 0, got {lr}")


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]
