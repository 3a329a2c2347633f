"""Fault injection for crash-resume tests (below every subpackage: no upward imports): ``AL_FAULT=<phase>:<n>[:<SIGNAL>][,…]``.

The process sends itself SIGKILL (or the named signal, e.g. ``fit:3:TERM``) at the n-th time it
reaches ``phase`` (counted per process): ``fit`` (a training batch ended), ``test`` (a test
batch ended), ``pool`` (a pool feature batch was scored), ``label`` (a label was persisted),
``db`` (a row of labels.db was written, its transaction not yet committed), ``write`` (a round
output file was written). Unset: no effect.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Dict

import lightning.pytorch as pl

PHASES = ("fit", "test", "pool", "label", "db", "write")
_counts: Dict[str, int] = {}


def hit(phase: str) -> None:
    """Count one arrival at ``phase``; signal this process (kill -9 by default) when AL_FAULT says so."""
    spec = os.environ.get("AL_FAULT")
    if not spec:
        return
    _counts[phase] = _counts.get(phase, 0) + 1
    for item in spec.split(","):
        name, _, rest = item.strip().partition(":")
        n, _, sig = rest.partition(":")
        if name == phase and n.isdigit() and _counts[phase] == int(n):
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else signal.SIGKILL)


class FaultCallback(pl.Callback):
    """Reports every finished training batch as phase ``fit``, every test batch as ``test``."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        hit("fit")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        hit("test")
