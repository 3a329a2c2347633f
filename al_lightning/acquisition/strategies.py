"""What a selection rule is (docs/design.md §5): a :class:`Strategy` turns the fitted model into
a :class:`PoolScorer` (its training side: Λ of the labeled set, committee members, …); the
acquisition engine (:mod:`al_lightning.acquisition.callback`) streams the pool through the
module's ``predict_step``, keeps the scorer's top-K and lets the scorer choose B of them.

Every rank calls :meth:`Strategy.plan` and the scorer's collectives (distributed strategies
need all ranks); only rank 0's choice counts. Strategies are deterministic given ``ctx.seed``
and ``ctx.round``. :class:`RandomStrategy` needs no pool pass (``plan`` returns None).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from al_lightning.acquisition.distributed import Comm
from al_lightning.acquisition.topk import TopK


@dataclass
class AcquisitionContext:
    """What a strategy may use. ``candidates``: sorted pool ids still selectable.

    ``comm`` carries rank / world size and the collectives (one process: the default);
    ``device`` is where feature passes, scoring, the top-K and LCMD run (the trainer's root
    device: a GPU when the fit ran on one); ``fit(module, datamodule, seed, name) -> record``
    fits another module the way the campaign fits the main one (committee members; None
    outside a campaign); ``pass_state``: where the pool pass keeps its resumable state
    (a :class:`~al_lightning.acquisition.pass_state.PassCheckpoint`; None: not kept).
    """

    module: Any
    datamodule: Any
    round: int
    seed: int
    budget: int
    candidates: np.ndarray
    comm: Comm = field(default_factory=Comm)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    fit: Optional[Callable[..., Dict[str, Any]]] = None
    pass_state: Any = None

    @classmethod
    def from_trainer(cls, trainer, **kwargs: Any) -> "AcquisitionContext":
        return cls(comm=Comm.from_trainer(trainer), device=trainer.strategy.root_device, **kwargs)


@dataclass
class Selection:
    """What one acquisition decided: ``ids`` (B,) int64 (rank 0's answer, broadcast), the
    strategy's diagnostics (``scalars`` / ``histograms`` / ``raw_histograms`` for TensorBoard),
    the pool ids this rank scored, seconds per phase (``train``, ``pool``, ``select``) and the
    pool batch a resumed pass continued at (None: the pass ran from its start)."""

    ids: np.ndarray
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    shard_ids: List[int] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    resumed_from: Optional[int] = None


class PoolScorer(ABC):
    """A strategy's view of the pool pass, built after its training side.

    ``spec``: what the module's ``predict_step`` computes per pool batch (a FeatureMap; None:
    energies and forces); ``k``: shortlist size; ``batch_size``: structures per pool batch, or
    with ``batch_atoms`` set, the batches hold at most ``batch_atoms`` atoms (``auto``:
    batch_size × the pool's mean atoms per structure; None: fixed batches of batch_size);
    ``labeled_pool``: pass the pool *with* its stored labels (offline control arms only).
    """

    spec: Any = None
    labeled_pool: bool = False
    k: int = 1
    batch_size: int = 16
    batch_atoms: Any = "auto"

    @abstractmethod
    def score(self, batch: Any, out: Any) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """One pool batch's (scores (G,), ids (G,), vectors (G, d) or None), on the device."""

    @abstractmethod
    def choose(self, top: TopK, budget: int) -> np.ndarray:
        """Rank 0: ``budget`` ids out of the merged shortlist (best first)."""

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        """Collective (every rank): what to log about this acquisition."""
        return {}

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What :meth:`Strategy.restore` needs to rebuild this scorer mid-pass (CPU tensors, numbers,
        strings); None: not resumable (a resumed pass plans again and starts over)."""
        return None


class Strategy(ABC):
    """Picks ``ctx.budget`` ids out of ``ctx.candidates``.

    ``aliases``: short config names of this class and the arguments they fix
    (``campaign.strategy: pv_lcmd`` ≡ ``class_path: al_lightning.acquisition.PVStrategy``,
    ``init_args: {mode: pv_lcmd}``); ``shorthands``: further option names :meth:`translate` turns
    into ``__init__`` arguments (configs written before an option was restructured keep working).
    """

    name = "strategy"
    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {}
    shorthands: ClassVar[Tuple[str, ...]] = ()  # options accepted besides __init__'s, for :meth:`translate`

    @classmethod
    def translate(cls, args: Dict[str, Any]) -> Dict[str, Any]:
        """Configured options (``shorthands`` included) → ``__init__`` arguments; default: as given."""
        return args

    def check(self, budget: int, n_candidates: int) -> None:
        """Refuse settings that cannot work (called before a campaign writes anything)."""
        if budget > n_candidates:
            raise ValueError(f"campaign.budget {budget} is larger than the pool ({n_candidates} candidates)")

    @abstractmethod
    def plan(self, ctx: AcquisitionContext) -> Optional[PoolScorer]:
        """Every rank: the training side; returns the pool scorer (None: :meth:`pick` decides)."""

    def restore(self, ctx: AcquisitionContext, state: Dict[str, Any]) -> Optional[PoolScorer]:
        """The scorer of :meth:`plan` rebuilt from its :meth:`PoolScorer.state_dict` (a resumed pool
        pass skips the training side); None: this strategy cannot, it plans again."""
        return None

    def pick(self, ctx: AcquisitionContext) -> np.ndarray:
        """Strategies without a pool pass: (budget,) ids."""
        raise NotImplementedError(f"{type(self).__name__} has no pool-free selection")


class RandomStrategy(Strategy):
    """Uniform without replacement; seeded by (seed, round)."""

    name = "random"
    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"random": {}}

    def plan(self, ctx: AcquisitionContext) -> None:
        return None

    def pick(self, ctx: AcquisitionContext) -> np.ndarray:
        rng = np.random.default_rng([ctx.seed, ctx.round])
        return np.sort(rng.choice(ctx.candidates, size=ctx.budget, replace=False)).astype(np.int64)
