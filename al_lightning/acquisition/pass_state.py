"""A pool pass that survives a crash (docs/design.md §6): the pass's state in the round's folder.

Every ``minutes`` minutes (0: after every batch) each rank writes, atomically, what it needs to go
on — the next batch of its shard, the running top-K with its vectors, the scorer's state (for PV:
the training side's Cholesky factor, its LCMD centres and the PV histogram) and the torch RNG
state — to ``round_NNN/pass_state.pt`` (rank 0) or ``round_NNN/pass_state.rank<r>.pt`` (rank r).
A rerun of the round with the same network weights, labeled set, candidates, strategy settings and
world size continues every rank from its file and selects the ids of an uninterrupted pass (the
top-K's order is total, so it does not depend on where the pass stopped). A file of another pass
(the refit came out different, another world size) or an unreadable one is set aside with one line
and the pass starts over: nothing labeled depends on it. Files load weights-only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from al_lightning import console
from al_lightning.atomic import atomic_write
from al_lightning.model.mace import hash_weights

VERSION = 1


def pass_key(ctx, strategy) -> str:
    """sha256 of what decides the pass: weights, labeled set, candidates, round, seed, strategy, world."""
    h = hash_weights(hashlib.sha256(), ctx.module.net)
    h.update(np.ascontiguousarray(ctx.candidates, dtype=np.int64).tobytes())
    settings = {"strategy": type(strategy).__qualname__, "options": vars(strategy), "round": ctx.round,
                "seed": ctx.seed, "budget": ctx.budget, "world": ctx.comm.world,
                "labeled": ctx.datamodule.state_dict()}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


class PassCheckpoint:
    """This round's pass state files under ``directory``, written at most every ``minutes`` minutes."""

    def __init__(self, directory: Path, minutes: float = 5.0) -> None:
        if minutes < 0:
            raise ValueError(f"campaign.pass_checkpoint_minutes must be >= 0, got {minutes}")
        self.directory, self.minutes = Path(directory), float(minutes)
        self._key: Optional[str] = None
        self._last = time.monotonic()

    def path(self, rank: int) -> Path:
        return self.directory / ("pass_state.pt" if rank == 0 else f"pass_state.rank{rank}.pt")

    def load(self, ctx, strategy) -> Optional[Dict[str, Any]]:
        """Collective: this rank's saved state when every rank has one of this very pass, else None."""
        self._key = pass_key(ctx, strategy)
        self._last = time.monotonic()
        state, problem = self._read(ctx)
        agreed = all(ctx.comm.all_gather(state is not None))
        if problem and ctx.comm.rank == 0:
            console.say(f"{self.path(ctx.comm.rank)}: {problem}; the pool pass starts over")
        return state if agreed else None

    def _read(self, ctx):
        path = self.path(ctx.comm.rank)
        if not path.exists():
            return None, None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file cut by a crash outside the atomic rename, or not ours
            return None, f"unreadable ({type(exc).__name__}: {str(exc)[:80]})"
        if not isinstance(state, dict) or state.get("version") != VERSION:
            return None, "not a pass state of this version"
        if state.get("key") != self._key:
            return None, "belongs to another pass (other weights, labeled set, candidates, settings or world size)"
        return state, None

    def due(self) -> bool:
        return time.monotonic() - self._last >= 60.0 * self.minutes

    def save(self, rank: int, make_state: Callable[[], Dict[str, Any]]) -> None:
        """Write ``make_state()`` (tensors, numbers, strings) atomically if ``minutes`` have passed."""
        if self._key is None or not self.due():
            return
        state = {"version": VERSION, "key": self._key, **make_state()}
        atomic_write(self.path(rank), lambda fh: torch.save(state, fh), binary=True)
        self._last = time.monotonic()

    def clear(self, rank: int) -> None:
        """The pass's result is stored elsewhere now (selected.json): remove this rank's file."""
        self.path(rank).unlink(missing_ok=True)
