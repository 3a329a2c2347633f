"""Posterior-variance strategy (docs/design.md §5): features → transforms → selection.

1. the feature map's rows of the labeled set → Λ (float64, batch-ordered sums) and LCMD centres;
2. pool shards → PV scores (none when the selector needs none) and LCMD vectors (raw, or whitened
   ψ = √λ L⁻¹φ) → running top-K (K = the selector's shortlist size) → merged on every rank;
3. rank 0: the selector chooses B (top-B, LCMD on the shortlist, LCMD over the pool, your own).

Short names (``campaign.strategy``): ``pv_lcmd`` (the default: PV shortlist + LCMD), ``pv_topb``,
``lcmd`` (LCMD over the whole pool, no PV), ``pv`` (features and selector from the options). The options of configs written before the feature maps
and selectors existed (``feature_kind``, ``params``, ``pool_force_mode``, …, ``mode``, ``shortlist``)
are shorthands that :meth:`PVStrategy.translate` turns into ``features`` and ``selector``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, ClassVar, Dict, Tuple, Union

import numpy as np
import torch

from al_lightning.acquisition.posterior import GramPartial, Precision
from al_lightning.acquisition.pool_pass import LogHistogram, split_calibration, training_side
from al_lightning.acquisition.selectors import SELECTORS, Selector, build_selector
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Strategy
from al_lightning.acquisition.topk import TopK
from al_lightning.features import FEATURE_MAPS, FeatureMap, build_feature_map
from al_lightning.plugins import full_class_path

MODES = {"pv_topb": "top_b", "pv_lcmd": "shortlist_lcmd", "lcmd": "lcmd"}  # mode → selector
FEATURE_SHORTHANDS = {"params": "params", "pool_force_mode": "force_mode", "pool_probes": "n_probes",
                      "train_force_mode": "train_force_mode", "train_probes": "train_probes",
                      "sketch_dim": "sketch_dim", "feature_seed": "seed"}
SCORE_DTYPES = ("auto", "float64", "float32")
FLOAT32_TOLERANCE = 1e-3  # "auto": float32 solves when the PV error bound is below this


class PVStrategy(Strategy):
    """Feature-space posterior variance of a feature map, then a selector.

    Defaults (NTK-EF of readouts+products sketched to 1024, rel_lambda 0.1, a 6 % shortlist, whitened
    LCMD, 16 training probes) are the ablation's choice (docs/results/ablation/).

    Args:
        features: a :class:`~al_lightning.features.FeatureMap`: ``ntk_e``, ``ntk_f``, ``ntk_ef``
            (default), ``activation``, ``descriptor``, or ``{class_path: …, init_args: …}``.
        selector: a :class:`~al_lightning.acquisition.selectors.Selector`: ``shortlist_lcmd``
            (default), ``top_b``, ``lcmd``, or ``{class_path: …, init_args: …}``.
        rel_lambda: λ = rel_lambda · mean kernel diagonal of the training rows.
        lcmd_space: vectors LCMD sees: ``raw`` φ or ``whitened`` ψ = √λ L⁻¹φ.
        batch_size: structures per feature batch. batch_atoms: pool batches by an atom budget
            (``auto``: batch_size × the pool's mean atoms per structure; an int; None: fixed
            batches of batch_size).
        calibration: log Spearman(PV, actual force error) on each test split.
        score_dtype: precision of the pool-side solve ψ = L⁻¹φ (the factor is always float64):
            ``float64``, ``float32``, or ``auto`` (float32 when its error bound
            2·κ(L)·√p·u₃₂ is below 1e-3, logged as ``pv/float32_error_bound``).
    """

    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"pv": {}, **{m: {"mode": m} for m in MODES}}
    shorthands: ClassVar[Tuple[str, ...]] = ("mode", "shortlist", "feature_kind", *FEATURE_SHORTHANDS)

    def __init__(self, features: Union[str, Dict[str, Any], FeatureMap] = "ntk_ef",
                 selector: Union[str, Dict[str, Any], Selector] = "shortlist_lcmd", rel_lambda: float = 0.1,
                 lcmd_space: str = "whitened", batch_size: int = 64, batch_atoms: Union[int, str, None] = "auto",
                 calibration: bool = True, score_dtype: str = "auto") -> None:
        checks = [(rel_lambda > 0, f"rel_lambda must be > 0, got {rel_lambda}"),
                  (lcmd_space in ("raw", "whitened"), f"lcmd_space must be 'raw' or 'whitened', got {lcmd_space!r}"),
                  (batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"),
                  (batch_atoms in (None, "auto") or (isinstance(batch_atoms, int) and batch_atoms >= 1),
                   f"batch_atoms must be 'auto', null or an int >= 1, got {batch_atoms!r}"),
                  (score_dtype in SCORE_DTYPES, f"score_dtype must be one of {SCORE_DTYPES}, got {score_dtype!r}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"strategy pv: {msg}")
        self.features, self.selector = build_feature_map(features), build_selector(selector)
        self.rel_lambda, self.lcmd_space = rel_lambda, lcmd_space
        self.batch_size, self.batch_atoms = batch_size, batch_atoms
        self.calibration, self.score_dtype = calibration, score_dtype

    @classmethod
    def translate(cls, args: Dict[str, Any]) -> Dict[str, Any]:
        """The shorthand options → ``features`` / ``selector`` specs (``shortlist`` counts only for
        ``pv_lcmd``, NTK options only for NTK maps, as before the components; otherwise ignored with a
        warning)."""
        args = dict(args)
        kind = args.pop("feature_kind", None)
        flat = {new: args.pop(old) for old, new in FEATURE_SHORTHANDS.items() if old in args}
        if kind is not None or flat:
            if "features" in args:
                raise ValueError("strategy pv: give features or the shorthands (feature_kind, params, …), not both")
            if (kind or "ntk_ef") not in FEATURE_MAPS:
                raise ValueError(f"strategy pv: feature_kind must be one of {tuple(FEATURE_MAPS)}, got {kind!r}")
            kind = kind or "ntk_ef"
            if flat and not kind.startswith("ntk"):
                warnings.warn(f"strategy_kwargs {sorted(flat)} are NTK options; feature_kind {kind} ignores them")
            args["features"] = {"class_path": FEATURE_MAPS[kind], "init_args": flat if kind.startswith("ntk") else {}}
        mode, shortlist = args.pop("mode", None), args.pop("shortlist", None)
        if mode is not None or shortlist is not None:
            if "selector" in args:
                raise ValueError("strategy pv: give selector or the shorthands (mode, shortlist), not both; "
                                 "pv_lcmd, pv_topb and lcmd fix the selector (mode): name yours with strategy: pv")
            if (mode or "pv_lcmd") not in MODES:
                raise ValueError(f"strategy pv: mode must be one of {tuple(MODES)}, got {mode!r}")
            mode = mode or "pv_lcmd"
            if shortlist is not None and mode != "pv_lcmd":
                warnings.warn(f"strategy_kwargs shortlist applies to pv_lcmd; {mode} ignores it")
            init = {"shortlist": shortlist} if shortlist is not None and mode == "pv_lcmd" else {}
            args["selector"] = {"class_path": SELECTORS[MODES[mode]], "init_args": init}
        for key, names in (("features", FEATURE_MAPS), ("selector", SELECTORS)):  # short names → import paths
            if key in args:
                args[key] = full_class_path(args[key], names)
        return args

    def check(self, budget: int, n_candidates: int) -> None:
        super().check(budget, n_candidates)
        self.selector.check(budget, n_candidates)

    def plan(self, ctx: AcquisitionContext) -> "PVScorer":
        """Training side: Λ of the labeled set's rows (and its LCMD centres), on ``ctx.device``."""
        k = self.selector.shortlist_size(len(ctx.candidates), ctx.budget)
        pool_map = self.features.prepare(ctx.module.net)
        t0 = time.perf_counter()
        precision, train_lcmd, gram = training_side(ctx, pool_map.training(), self.rel_lambda, self.batch_size)
        bound = precision.float32_error_bound(gram.gram)
        use32 = self.score_dtype == "float32" or (self.score_dtype == "auto" and bound <= FLOAT32_TOLERANCE)
        return PVScorer(self, pool_map, k, precision, train_lcmd, gram, torch.float32 if use32 else torch.float64,
                        bound, time.perf_counter() - t0)

    def restore(self, ctx: AcquisitionContext, state: Dict[str, Any]) -> "PVScorer":
        """The scorer of :meth:`plan` from :meth:`PVScorer.state_dict` (no training-side pass)."""
        precision = Precision(**state["precision"]).to(ctx.device)
        scorer = PVScorer(self, self.features.prepare(ctx.module.net),
                          self.selector.shortlist_size(len(ctx.candidates), ctx.budget), precision,
                          state["train_lcmd"].to(ctx.device), GramPartial(**state["gram"]),
                          getattr(torch, state["score_dtype"]), state["bound"], state["train_seconds"])
        scorer.histogram.counts = state["histogram"].numpy().copy()
        return scorer


class PVScorer(PoolScorer):
    """Pool side of :class:`PVStrategy`: each chunk scored once (PV → histogram and top-K)."""

    def __init__(self, strategy: PVStrategy, spec: FeatureMap, k: int, precision, train_lcmd, gram,
                 score_dtype: torch.dtype, bound: float, train_seconds: float) -> None:
        self.strategy, self.spec, self.k = strategy, spec, k
        self.batch_size, self.batch_atoms = strategy.batch_size, strategy.batch_atoms
        self.precision, self.train_lcmd, self.gram = precision, train_lcmd, gram
        self.score_dtype, self.bound, self.train_seconds = score_dtype, bound, train_seconds
        self.histogram = LogHistogram()

    def score(self, batch: Any, out: Any):
        vectors = out.lcmd
        if self.strategy.lcmd_space == "whitened":
            vectors = self.precision.whiten_vectors(vectors)
        if not self.strategy.selector.scored:  # the selector keeps every candidate: no PV to compute
            return torch.zeros(len(out.ids), dtype=torch.float64, device=vectors.device), out.ids, vectors
        scores = self.precision.score(out.rows, dtype=self.score_dtype)
        self.histogram.add(scores)  # last: an out-of-memory error above leaves the histogram as it was
        return scores, out.ids, vectors

    def state_dict(self) -> Dict[str, Any]:
        precision = {f.name: getattr(self.precision, f.name) for f in dataclasses.fields(self.precision)}
        return {"precision": {k: v.cpu() if torch.is_tensor(v) else v for k, v in precision.items()},
                "train_lcmd": self.train_lcmd.cpu(), "gram": {"gram": self.gram.gram.cpu(), "n_rows": self.gram.n_rows},
                "score_dtype": str(self.score_dtype).removeprefix("torch."), "bound": self.bound,
                "train_seconds": self.train_seconds, "histogram": torch.from_numpy(self.histogram.counts.copy())}

    def choose(self, top: TopK, budget: int) -> np.ndarray:
        centres = self.train_lcmd if self.strategy.lcmd_space == "raw" else self.precision.whiten_vectors(self.train_lcmd)
        return self.strategy.selector.choose(top, budget, centres)

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        counts = self.histogram.merged(ctx.comm)
        eig = torch.linalg.eigvalsh(self.gram.gram).clamp_min(0)
        lam = self.precision.lam
        scalars = {"pv/lambda": lam, "pv/effective_dimension": float((eig / (eig + lam)).sum()),
                   "pv/float32_error_bound": self.bound, "pv/float32_scoring": float(self.score_dtype == torch.float32)}
        histograms, scored = {}, self.strategy.selector.scored
        if scored:
            scalars["pv/pool_median"] = self.histogram.median(counts)
        if scored and self.k < len(ctx.candidates):  # K = every candidate (balanced): no threshold to report
            scalars["pv/shortlist_threshold"] = float(top.scores.min()) if len(top) else float("nan")
        if scored and ctx.comm.rank == 0 and len(ids):
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
                "raw_histograms": {"pv/pool": (self.histogram.edges, counts)} if scored else {}}
