"""Acquisition: feature-space posterior variance, streaming top-K, LCMD (docs/design.md §5)."""

from al_lightning.acquisition.lcmd import select_lcmd, select_lcmd_ids
from al_lightning.acquisition.posterior import (
    GramPartial,
    Precision,
    PrecisionAccumulator,
    build_precision,
    cholesky_with_jitter,
    gram_partial,
    posterior_variance,
    sum_partials,
)
from al_lightning.acquisition.topk import StreamingTopK, TopK, merge_topk, rank_order, score_pool

__all__ = [
    "GramPartial",
    "Precision",
    "PrecisionAccumulator",
    "StreamingTopK",
    "TopK",
    "build_precision",
    "cholesky_with_jitter",
    "gram_partial",
    "merge_topk",
    "posterior_variance",
    "rank_order",
    "score_pool",
    "select_lcmd",
    "select_lcmd_ids",
    "sum_partials",
]
