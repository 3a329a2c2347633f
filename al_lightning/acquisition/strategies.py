"""Selection strategies: ``select(ctx) -> B global pool ids``.

Every rank calls :meth:`Strategy.select` (distributed strategies need all ranks for their
pool pass); the campaign broadcasts rank 0's answer. Strategies are deterministic given
``ctx.seed`` and ``ctx.round``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np
import torch

from al_lightning.acquisition.distributed import Comm


@dataclass
class AcquisitionContext:
    """What a strategy may use. ``candidates``: sorted pool ids still selectable.

    ``comm`` carries rank / world size and the collectives (one process: the default);
    ``device`` is where feature passes run (the trainer's root device).
    """

    module: Any
    datamodule: Any
    round: int
    seed: int
    budget: int
    candidates: np.ndarray
    comm: Comm = field(default_factory=Comm)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_trainer(cls, trainer, **kwargs: Any) -> "AcquisitionContext":
        return cls(comm=Comm.from_trainer(trainer), device=trainer.strategy.root_device, **kwargs)


class Strategy(ABC):
    """Picks ``ctx.budget`` ids out of ``ctx.candidates``."""

    name = "strategy"
    diagnostics: Dict[str, Any] = {}

    def check(self, budget: int, n_candidates: int) -> None:
        """Refuse settings that cannot work (called before a campaign writes anything)."""
        if budget > n_candidates:
            raise ValueError(f"campaign.budget {budget} is larger than the pool ({n_candidates} candidates)")

    @abstractmethod
    def select(self, ctx: AcquisitionContext) -> np.ndarray:
        """(budget,) int64 global pool ids, distinct, all in ``ctx.candidates``."""


class RandomStrategy(Strategy):
    """Uniform without replacement; seeded by (seed, round)."""

    name = "random"

    def __init__(self) -> None:
        self.diagnostics = {}

    def select(self, ctx: AcquisitionContext) -> np.ndarray:
        rng = np.random.default_rng([ctx.seed, ctx.round])
        return np.sort(rng.choice(ctx.candidates, size=ctx.budget, replace=False)).astype(np.int64)
