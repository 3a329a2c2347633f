"""Control arms of offline benchmarks (issue 13): not selection rules a user would run.

- :class:`OracleStrategy` (``oracle_error``) — the B pool structures with the largest true
  per-structure force error of the current model. It reads the pool's stored labels, so it only
  exists where the labels are known offline. If it cannot beat random, no rule can on that
  benchmark.
- :class:`SystemSampler` (``one_per_system``) — B random frames from B different trajectories
  (systems), preferring systems with no labeled frame yet: the diversity a trajectory pool
  offers for free.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict

import numpy as np

from al_lightning import keys as K
from al_lightning.model.metrics import free_atom_mean
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Strategy
from al_lightning.acquisition.topk import TopK


class OracleStrategy(Strategy):
    """Top-B true force error (mean |ΔF| over free atoms) of the fitted model; offline only."""

    name = "oracle_error"
    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"oracle_error": {}}

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def plan(self, ctx: AcquisitionContext) -> "OracleScorer":
        return OracleScorer(ctx.budget, self.batch_size)


class OracleScorer(PoolScorer):
    """Pool pass over the *labeled* pool file: plain predictions against the stored forces."""

    labeled_pool = True

    def __init__(self, k: int, batch_size: int) -> None:
        self.k, self.batch_size = k, batch_size

    def score(self, batch: Any, out: Any):
        err = free_atom_mean((out[K.OUT_FORCES] - batch[K.FORCES]).abs().mean(dim=1), batch)
        return err.double(), batch[K.STRUCTURE_ID], None

    def choose(self, top: TopK, budget: int) -> np.ndarray:
        return top.ids[:budget].cpu().numpy().astype(np.int64)

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        return {"scalars": {"oracle/threshold": float(top.scores.min())},
                "histograms": {"oracle/selected": top.scores.cpu().numpy()}}


class SystemSampler(Strategy):
    """B random frames of B distinct systems (``info[system_key]``), unlabeled systems first."""

    name = "one_per_system"
    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"one_per_system": {}}

    def __init__(self, key: str = "system_key") -> None:
        self.key = key

    def plan(self, ctx: AcquisitionContext) -> None:
        return None

    def pick(self, ctx: AcquisitionContext) -> np.ndarray:
        pool = ctx.datamodule.structure_file("pool")
        system = {int(i): str(pool.raw(int(i)).info.get(self.key, int(i))) for i in ctx.candidates}
        seen = {str(pool.raw(int(i)).info.get(self.key, int(i))) for i in ctx.datamodule.labeled_ids}
        rng = np.random.default_rng([ctx.seed, ctx.round, 7919])
        order = rng.permutation(np.asarray(ctx.candidates))
        fresh = [i for i in order if system[int(i)] not in seen]
        ranked = fresh + [i for i in order if system[int(i)] in seen]
        picked, used = [], set()
        for i in ranked:  # one frame per system while systems last, then any frame
            if system[int(i)] not in used:
                picked.append(int(i))
                used.add(system[int(i)])
            if len(picked) == ctx.budget:
                break
        chosen = set(picked)
        rest = [int(i) for i in ranked if int(i) not in chosen]
        picked += rest[: ctx.budget - len(picked)]
        return np.sort(np.asarray(picked, dtype=np.int64))
