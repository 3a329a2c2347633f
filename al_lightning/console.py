"""What a campaign prints: Lightning's boilerplate silenced unless ``--verbose``, one line per event."""

from __future__ import annotations

import logging
import sys

# Lightning's info lines: "GPU available…", "TPU available…", the litlogger tip, "Seed set to…",
# "`Trainer.fit` stopped…" — all logged at INFO by these loggers.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def quiet_lightning(verbose: bool = False) -> None:
    """Silence Lightning's INFO boilerplate (warnings still show); ``verbose`` restores it."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def say(message: str) -> None:
    """One console line (stderr, so stdout stays machine-readable), prefixed ``al-lightning:``."""
    print(f"al-lightning: {message}", file=sys.stderr, flush=True)
