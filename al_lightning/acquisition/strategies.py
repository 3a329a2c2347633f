"""Selection strategies: ``select(ctx) -> B global pool ids``.

Every rank calls :meth:`Strategy.select` (distributed strategies need all ranks for their
pool pass); the campaign broadcasts rank 0's answer. Strategies are deterministic given
``ctx.seed`` and ``ctx.round``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Type

import numpy as np


@dataclass
class AcquisitionContext:
    """What a strategy may use. ``candidates``: sorted pool ids still selectable."""

    trainer: Any
    module: Any
    datamodule: Any
    round: int
    seed: int
    budget: int
    candidates: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.trainer.global_rank)

    @property
    def world(self) -> int:
        return int(self.trainer.world_size)


class Strategy(ABC):
    """Picks ``ctx.budget`` ids out of ``ctx.candidates``."""

    name = "strategy"

    @abstractmethod
    def select(self, ctx: AcquisitionContext) -> np.ndarray:
        """(budget,) int64 global pool ids, distinct, all in ``ctx.candidates``."""


class RandomStrategy(Strategy):
    """Uniform without replacement; seeded by (seed, round)."""

    name = "random"

    def select(self, ctx: AcquisitionContext) -> np.ndarray:
        rng = np.random.default_rng([ctx.seed, ctx.round])
        return np.sort(rng.choice(ctx.candidates, size=ctx.budget, replace=False)).astype(np.int64)


STRATEGIES: Dict[str, Type[Strategy]] = {"random": RandomStrategy}


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Strategy by its DESIGN §5 name (clear error listing the known ones)."""
    if name not in STRATEGIES:
        raise ValueError(f"campaign strategy {name!r} unknown; available: {sorted(STRATEGIES)}")
    return STRATEGIES[name](**kwargs)
