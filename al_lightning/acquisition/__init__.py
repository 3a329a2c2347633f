"""Acquisition (docs/design.md §5): strategies, the engine that runs them when a fit ends, and
the pure maths for users who bring their own features.

- strategies (configure by ``class_path`` or short name, :func:`build_strategy`):
  :class:`RandomStrategy`, :class:`PVStrategy` (a feature map × a selector; short names
  ``pv_topb``, ``pv_lcmd``, ``lcmd``),
  :class:`CommitteeStrategy` (``committee_e``, ``committee_f``); offline controls
  :class:`OracleStrategy` (``oracle_error``) and :class:`SystemSampler` (``one_per_system``);
- selectors (:class:`Selector`: :class:`TopB`, :class:`LCMD`, :class:`ShortlistLCMD`,
  :class:`BalancedLCMD`, your own);
- the engine: :class:`AcquisitionCallback` (strategy → pool predict → top-K → LCMD → oracle),
  :func:`select` (the same without Lightning or labeling);
- maths: :func:`posterior_variance` ``(pool, train, lam) -> (n_pool,)``, :func:`select_lcmd`
  ``(pool, B, train=...) -> (B,)``, :class:`StreamingTopK`, :func:`build_precision`, …
"""

from al_lightning.acquisition.callback import AcquisitionCallback, AcquisitionResult, HandoffPending, select
from al_lightning.acquisition.committee import CommitteeStrategy
from al_lightning.acquisition.config import build_strategy, strategy_label, strategy_names
from al_lightning.acquisition.controls import OracleStrategy, SystemSampler
from al_lightning.acquisition.lcmd import select_lcmd, select_lcmd_ids
from al_lightning.acquisition.posterior import (
    GramPartial,
    Precision,
    build_precision,
    cholesky_with_jitter,
    gram_partial,
    posterior_variance,
)
from al_lightning.acquisition.pv import PVStrategy
from al_lightning.acquisition.selectors import (LCMD, SELECTORS, BalancedLCMD, Selector, ShortlistLCMD, TopB,
                                                build_selector)
from al_lightning.acquisition.strategies import (AcquisitionContext, PoolScorer, RandomStrategy, Selection,
                                                 Strategy)
from al_lightning.acquisition.topk import StreamingTopK, TopK, merge_topk, rank_order

__all__ = [
    "AcquisitionCallback",
    "AcquisitionContext",
    "AcquisitionResult",
    "BalancedLCMD",
    "CommitteeStrategy",
    "GramPartial",
    "LCMD",
    "SELECTORS",
    "Selector",
    "ShortlistLCMD",
    "TopB",
    "build_selector",
    "HandoffPending",
    "OracleStrategy",
    "PVStrategy",
    "PoolScorer",
    "Precision",
    "RandomStrategy",
    "Selection",
    "Strategy",
    "SystemSampler",
    "StreamingTopK",
    "TopK",
    "build_precision",
    "build_strategy",
    "cholesky_with_jitter",
    "gram_partial",
    "merge_topk",
    "posterior_variance",
    "rank_order",
    "select",
    "select_lcmd",
    "select_lcmd_ids",
    "strategy_label",
    "strategy_names",
]
