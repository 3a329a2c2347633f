"""Posterior-variance strategies (docs/design.md §5): ``pv_topb``, ``pv_lcmd`` (default), ``lcmd``.

1. training rows of the labeled set → Λ (float64, batch-ordered sums) and LCMD centres;
2. pool shards → PV scores → running top-K (K = B for ``pv_topb``, all candidates for
   ``lcmd``, ``shortlist`` for ``pv_lcmd``) → merged on every rank;
3. rank 0: top B (``pv_topb``) or LCMD of B on the shortlist ordered by id.
Any feature kind of :mod:`al_lightning.features` (``ntk_e``, ``ntk_f``, ``ntk_ef``,
``activation``, ``descriptor``); rows scaled by the training loss weights √w_E, √w_F.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, ClassVar, Dict, List, Optional, Union

import numpy as np
import torch

from al_lightning.acquisition.lcmd import select_lcmd_ids
from al_lightning.acquisition.posterior import GramPartial, Precision
from al_lightning.acquisition.pool_pass import LogHistogram, split_calibration, training_side
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Strategy
from al_lightning.acquisition.topk import TopK
from al_lightning.features import FEATURE_KINDS, FORCE_MODES, FeatureSpec, TensorSketch, resolve_params

MODES = ("pv_topb", "pv_lcmd", "lcmd")
SCORE_DTYPES = ("auto", "float64", "float32")
FLOAT32_TOLERANCE = 1e-3  # "auto": float32 solves when the PV error bound is below this


class PVStrategy(Strategy):
    """Feature-space posterior variance with a streaming shortlist and optional LCMD.

    Defaults (params readouts+products, sketch_dim 1024, rel_lambda 0.1, shortlist 6 % of the
    candidates, whitened LCMD, 16 training probes) are the ablation's choice
    (docs/results/ablation/: stage-1 winner, and the best finalist of stage 2 — where, on the
    tuning benchmark, no PV finalist beat random).

    Args:
        feature_kind: one of ``ntk_e``, ``ntk_f``, ``ntk_ef`` (default), ``activation``, ``descriptor``.
        params: parameter subset of the NTK (preset ``readouts``, ``readouts+products``, or patterns).
        pool_force_mode / pool_probes: force rows of pool structures (cheap: ``direction``).
        train_force_mode / train_probes: force rows of the labeled set (``probes`` ≥ 16 or ``exact``).
        rel_lambda: λ = rel_lambda · mean kernel diagonal of the training rows.
        shortlist: K of ``pv_lcmd``: a count, or a fraction of the candidates when < 1 (e.g. 0.06:
            6 % of the pool, at least B). lcmd_space: ``raw`` or ``whitened`` (ψ = √λ L⁻¹φ).
        batch_size: structures per feature batch. batch_atoms: pool batches by an atom budget
            (``auto``: batch_size × the pool's mean atoms per structure; an int; None: fixed
            batches of batch_size). sketch_dim: tensor-sketch the NTK to this size.
        calibration: log Spearman(PV, actual force error) on each test split.
        score_dtype: precision of the pool-side solve ψ = L⁻¹φ (the factor is always float64):
            ``float64``, ``float32``, or ``auto`` (float32 when its error bound
            2·κ(L)·√p·u₃₂ is below 1e-3, logged as ``pv/float32_error_bound``).
    """

    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {m: {"mode": m} for m in MODES}

    def __init__(self, mode: str = "pv_lcmd", feature_kind: str = "ntk_ef",
                 params: Union[str, List[str]] = "readouts+products", pool_force_mode: str = "direction",
                 pool_probes: int = 4, train_force_mode: str = "probes", train_probes: int = 16,
                 rel_lambda: float = 0.1, shortlist: Union[int, float] = 0.06, lcmd_space: str = "whitened",
                 batch_size: int = 64, batch_atoms: Union[int, str, None] = "auto", sketch_dim: Optional[int] = 1024, feature_seed: int = 0,
                 calibration: bool = True, score_dtype: str = "auto") -> None:
        checks = [(mode in MODES, f"mode must be one of {MODES}"),
                  (feature_kind in FEATURE_KINDS, f"feature_kind must be one of {FEATURE_KINDS}, got {feature_kind!r}"),
                  (pool_force_mode in FORCE_MODES, f"pool_force_mode must be one of {FORCE_MODES}"),
                  (train_force_mode in FORCE_MODES, f"train_force_mode must be one of {FORCE_MODES}"),
                  (pool_probes >= 1 and train_probes >= 1, "pool_probes and train_probes must be >= 1"),
                  (rel_lambda > 0, f"rel_lambda must be > 0, got {rel_lambda}"),
                  (shortlist >= 1 or 0 < shortlist < 1, f"shortlist must be >= 1 or a fraction in (0, 1), got {shortlist}"),
                  (lcmd_space in ("raw", "whitened"), f"lcmd_space must be 'raw' or 'whitened', got {lcmd_space!r}"),
                  (batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"),
                  (batch_atoms in (None, "auto") or (isinstance(batch_atoms, int) and batch_atoms >= 1),
                   f"batch_atoms must be 'auto', null or an int >= 1, got {batch_atoms!r}"),
                  (sketch_dim is None or sketch_dim >= 1, f"sketch_dim must be >= 1, got {sketch_dim}"),
                  (score_dtype in SCORE_DTYPES, f"score_dtype must be one of {SCORE_DTYPES}, got {score_dtype!r}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"strategy {mode}: {msg}")
        self.mode, self.name = mode, mode
        self.feature_kind, self.params = feature_kind, params
        self.pool_force_mode, self.pool_probes = pool_force_mode, pool_probes
        self.train_force_mode, self.train_probes = train_force_mode, train_probes
        self.rel_lambda, self.shortlist, self.lcmd_space = rel_lambda, shortlist, lcmd_space
        self.batch_size, self.batch_atoms = batch_size, batch_atoms
        self.sketch_dim, self.feature_seed = sketch_dim, feature_seed
        self.calibration, self.score_dtype = calibration, score_dtype

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        """K for this many candidates: the count, or max(B, ⌈fraction · n⌉), at most n."""
        if self.shortlist < 1:
            return min(n_candidates, max(budget, math.ceil(self.shortlist * n_candidates)))
        return min(int(self.shortlist), n_candidates)

    def check(self, budget: int, n_candidates: int) -> None:
        super().check(budget, n_candidates)
        if self.mode == "pv_lcmd" and self.shortlist >= 1 and self.shortlist < budget:
            raise ValueError(f"strategy pv_lcmd: shortlist K={self.shortlist} is smaller than the budget B={budget}")

    def _k(self, ctx: AcquisitionContext) -> int:
        n = len(ctx.candidates)
        if self.mode == "pv_topb":
            return ctx.budget
        if self.mode == "lcmd":
            return n
        if 1 <= self.shortlist < ctx.budget:
            raise ValueError(f"strategy pv_lcmd: shortlist K={self.shortlist} is smaller than the budget B={ctx.budget}")
        return self.shortlist_size(n, ctx.budget)

    def specs(self, net: torch.nn.Module):
        """(training-side spec, pool-side spec) sharing one resolved parameter subset and sketch."""
        ntk = self.feature_kind.startswith("ntk")
        params = resolve_params(net, self.params) if ntk else self.params
        sketch = TensorSketch(self.sketch_dim, seed=self.feature_seed) if (self.sketch_dim and ntk) else None
        common = dict(kind=self.feature_kind, params=params, seed=self.feature_seed, sketch=sketch)
        return (FeatureSpec(force_mode=self.train_force_mode, n_probes=self.train_probes, **common),
                FeatureSpec(force_mode=self.pool_force_mode, n_probes=self.pool_probes, **common))

    def plan(self, ctx: AcquisitionContext) -> "PVScorer":
        """Training side: Λ of the labeled set's rows (and its LCMD centres), on ``ctx.device``."""
        k = self._k(ctx)
        train_spec, pool_spec = self.specs(ctx.module.net)
        t0 = time.perf_counter()
        precision, train_lcmd, gram = training_side(ctx, train_spec, self.rel_lambda, self.batch_size)
        bound = precision.float32_error_bound(gram.gram)
        use32 = self.score_dtype == "float32" or (self.score_dtype == "auto" and bound <= FLOAT32_TOLERANCE)
        return PVScorer(self, pool_spec, k, precision, train_lcmd, gram, torch.float32 if use32 else torch.float64,
                        bound, time.perf_counter() - t0)

    def restore(self, ctx: AcquisitionContext, state: Dict[str, Any]) -> "PVScorer":
        """The scorer of :meth:`plan` from :meth:`PVScorer.state_dict` (no training-side pass)."""
        _, pool_spec = self.specs(ctx.module.net)
        precision = Precision(**state["precision"]).to(ctx.device)
        scorer = PVScorer(self, pool_spec, self._k(ctx), precision, state["train_lcmd"].to(ctx.device),
                          GramPartial(**state["gram"]), getattr(torch, state["score_dtype"]), state["bound"],
                          state["train_seconds"])
        scorer.histogram.counts = state["histogram"].numpy().copy()
        return scorer


class PVScorer(PoolScorer):
    """Pool side of :class:`PVStrategy`: each chunk scored once (PV → histogram and top-K)."""

    def __init__(self, strategy: PVStrategy, spec: FeatureSpec, k: int, precision, train_lcmd, gram,
                 score_dtype: torch.dtype, bound: float, train_seconds: float) -> None:
        self.strategy, self.spec, self.k = strategy, spec, k
        self.batch_size, self.batch_atoms = strategy.batch_size, strategy.batch_atoms
        self.precision, self.train_lcmd, self.gram = precision, train_lcmd, gram
        self.score_dtype, self.bound, self.train_seconds = score_dtype, bound, train_seconds
        self.histogram = LogHistogram()

    def score(self, batch: Any, out: Any):
        scores = self.precision.score(out.rows, dtype=self.score_dtype)
        vectors = out.lcmd
        if self.strategy.lcmd_space == "whitened":
            vectors = self.precision.whiten_vectors(vectors)
        self.histogram.add(scores)  # last: an out-of-memory error above leaves the histogram as it was
        return scores, out.ids, vectors

    def state_dict(self) -> Dict[str, Any]:
        precision = {f.name: getattr(self.precision, f.name) for f in dataclasses.fields(self.precision)}
        return {"precision": {k: v.cpu() if torch.is_tensor(v) else v for k, v in precision.items()},
                "train_lcmd": self.train_lcmd.cpu(), "gram": {"gram": self.gram.gram.cpu(), "n_rows": self.gram.n_rows},
                "score_dtype": str(self.score_dtype).removeprefix("torch."), "bound": self.bound,
                "train_seconds": self.train_seconds, "histogram": torch.from_numpy(self.histogram.counts.copy())}

    def choose(self, top: TopK, budget: int) -> np.ndarray:
        if self.strategy.mode == "pv_topb":
            return top.ids[:budget].cpu().numpy().astype(np.int64)
        centres = self.train_lcmd if self.strategy.lcmd_space == "raw" else self.precision.whiten_vectors(self.train_lcmd)
        # duplicates in a pool can leave fewer distinct points than B: fill with the lowest ids
        return select_lcmd_ids(top.ids, top.vectors, budget, train=centres if len(centres) else None,
                               on_exhausted="fill").cpu().numpy()

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        counts = self.histogram.merged(ctx.comm)
        eig = torch.linalg.eigvalsh(self.gram.gram).clamp_min(0)
        lam = self.precision.lam
        scalars = {"pv/lambda": lam, "pv/effective_dimension": float((eig / (eig + lam)).sum()),
                   "pv/shortlist_threshold": float(top.scores.min()) if len(top) else float("nan"),
                   "pv/pool_median": self.histogram.median(counts), "pv/float32_error_bound": self.bound,
                   "pv/float32_scoring": float(self.score_dtype == torch.float32)}
        histograms = {}
        if ctx.comm.rank == 0 and len(ids):
            chosen = top.scores[torch.isin(top.ids, torch.as_tensor(ids, device=top.ids.device))].cpu().numpy()
            scalars["pv/selected_median"] = float(np.median(chosen))
            histograms["pv/selected"] = chosen
        if self.strategy.calibration:
            from scipy.stats import spearmanr

            for split in ctx.datamodule.test_splits:
                pv, err = split_calibration(ctx, split, self.spec, self.precision, self.batch_size, self.score_dtype)
                if len(pv) > 2:
                    scalars[f"calibration/{split}/spearman_pv_force_error"] = float(spearmanr(pv, err).statistic)
        return {"scalars": scalars, "histograms": histograms,
                "raw_histograms": {"pv/pool": (self.histogram.edges, counts)}}
