"""AcquisitionCallback: when a fit ends, the campaign acquires the next batch."""

from __future__ import annotations

import lightning.pytorch as pl


class AcquisitionCallback(pl.Callback):
    """Thin hook: delegates to ``campaign.acquire(trainer, module)`` at ``on_fit_end``."""

    def __init__(self, campaign) -> None:
        self.campaign = campaign

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.campaign.acquire(trainer, pl_module)
