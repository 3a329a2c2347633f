"""Training callbacks that decide which weights a fit leaves in the module.

- :class:`EMAWeights`: an exponential moving average of the weights (Lightning's
  ``WeightAveraging`` with ``get_ema_multi_avg_fn``). Validation sees the averaged weights, and
  at train end the average is copied into the module: what is tested, exported, checkpointed
  and used for acquisition afterwards is the EMA, and a warm-started next fit continues from
  it. :meth:`MACEModule.configure_callbacks` adds it whenever ``model.ema_decay`` is set.
- :class:`BestWeights`: keeps, in memory, the weights that gave the best monitored validation
  value (``val/loss``) and loads them into the module at train end. Lightning has no in-memory
  best-weights callback (``ModelCheckpoint`` writes pickled ``.ckpt`` files), hence this one.

- :class:`LossCurve`: the monitored value (``val/loss``) after every validation epoch, as a list
  (committee members report their training curves with it).

Order: ``BestWeights`` is a :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning runs
it after every other callback (including ``EMAWeights`` added by the module). ``EMAWeights``
keeps the averaged weights in the module from ``on_validation_epoch_start`` to
``on_validation_end`` (Lightning's base class swaps back at ``on_validation_epoch_end``), so
``BestWeights`` snapshots the very weights that were validated, and its restore at train end
comes after the EMA copy.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMAWeights(WeightAveraging):
    """EMA of the parameters, updated after every optimizer step (W ← d·W + (1 − d)·W_model).

    The average restarts at every fit from the module's weights at fit start (its first update
    copies them), so a campaign round needs no EMA state from the previous round. Buffers are
    not averaged (MACE keeps integer buffers such as atomic numbers; they never change).
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and next(iter(pl_module.parameters()), None) is None:
            pl_module.setup(stage)  # MACEModule builds its net here; the average needs its parameters
            if next(iter(pl_module.parameters()), None) is None:
                raise RuntimeError("EMAWeights: the module has no parameters at fit start; build the network first")
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None:  # setup ran before the strategy moved the module
            self._average_model.to(pl_module.device)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the average is now the module's weights
        self._average_model = None  # a later validate/test on this Trainer must not swap again

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the averaged weights in place until :meth:`on_validation_end` (see module doc)."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)


class BestWeights(Checkpoint):
    """Keeps the validated weights of the best ``monitor`` epoch in memory; loads them at train end.

    After the fit: ``best_score`` (the monitored value), ``best_epoch`` (0-based), ``best_metrics``
    (every ``val/*`` value logged in that epoch), ``epochs_validated``. Non-finite values never
    count as best; with no best epoch the module keeps its final weights.
    """

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch: Optional[int] = None
        self.best_metrics: Dict[str, float] = {}
        self.epochs_validated = 0
        self._state: Optional[Dict[str, torch.Tensor]] = None
        self._improved = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._improved = False
        if trainer.sanity_checking:
            return
        self.epochs_validated += 1
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) >= self.best_score:
            return
        self.best_score, self.best_epoch, self._improved = float(value), trainer.current_epoch, True
        self._state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._improved:  # the module logs its split metrics after the callbacks' epoch-end hooks
            self.best_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state)


class LossCurve(pl.Callback):
    """``values``: the monitored metric after each validation epoch of a fit (floats)."""

    def __init__(self, monitor: str = "val/loss") -> None:
        self.monitor, self.values = monitor, []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            self.values.append(float(value))
