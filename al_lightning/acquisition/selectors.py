"""Selectors (docs/design.md §5): B ids out of a scored pool — bmdal_reg's selection step.

The engine streams the pool through a strategy's scorer into a running top-K of
K = :meth:`Selector.shortlist_size` candidates (with their LCMD vectors), merges the ranks'
shortlists and lets the selector choose on rank 0. Built-in selectors (short names):

- ``top_b`` :class:`TopB`: the B highest scores (K = B);
- ``lcmd`` :class:`LCMD`: LCMD over the whole pool (K = every candidate; ``scored = False``: the
  scorer computes no posterior variance, only the vectors);
- ``shortlist_lcmd`` :class:`ShortlistLCMD`: LCMD on the K highest scores (K a count, or a fraction of
  the candidates, at least B).

LCMD runs on the shortlist ordered by id, with the labeled set's vectors as fixed centres
(:func:`~al_lightning.acquisition.lcmd.select_lcmd_ids`). Your own selector: subclass
:class:`Selector`, give it by class_path (``campaign.strategy_kwargs: {selector: {class_path: …}}``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, Optional, Union

import numpy as np
from torch import Tensor

from al_lightning.acquisition.lcmd import select_lcmd_ids
from al_lightning.acquisition.topk import TopK
from al_lightning.plugins import Component, instantiate


class Selector(Component, ABC):
    """Chooses ``budget`` ids out of the merged shortlist (rank 0)."""

    scored: ClassVar[bool] = True  # False: needs no per-candidate score, only the LCMD vectors

    def check(self, budget: int, n_candidates: int) -> None:
        """Refuse settings that cannot work (called before a campaign writes anything)."""

    @abstractmethod
    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        """K: how many of the best-scored candidates the pool pass keeps (with their vectors)."""

    @abstractmethod
    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        """(budget,) int64 ids out of ``top`` (scores descending); ``centres``: the labeled set's
        LCMD vectors (n_T, d) in the shortlist's space, or None."""


class TopB(Selector):
    """``top_b``: the ``budget`` highest scores."""

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        return budget

    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        return top.ids[:budget].cpu().numpy().astype(np.int64)


def _lcmd(top: TopK, budget: int, centres: Optional[Tensor]) -> np.ndarray:
    # duplicates in a pool can leave fewer distinct points than B: fill with the lowest ids
    train = centres if centres is not None and len(centres) else None
    return select_lcmd_ids(top.ids, top.vectors, budget, train=train, on_exhausted="fill").cpu().numpy()


class LCMD(Selector):
    """``lcmd``: LCMD over every candidate (no scores needed)."""

    scored = False

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        return n_candidates

    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        return _lcmd(top, budget, centres)


class ShortlistLCMD(Selector):
    """``shortlist_lcmd``: LCMD on the ``shortlist`` best-scored candidates: a count, or a fraction of
    the candidates when < 1 (e.g. 0.06: 6 % of the pool, at least B)."""

    def __init__(self, shortlist: Union[int, float] = 0.06) -> None:
        if not (shortlist >= 1 or 0 < shortlist < 1):
            raise ValueError(f"shortlist must be >= 1 or a fraction in (0, 1), got {shortlist}")
        self.shortlist = shortlist

    def check(self, budget: int, n_candidates: int) -> None:
        if 1 <= self.shortlist < budget:
            raise ValueError(f"selector shortlist_lcmd: shortlist K={self.shortlist} is smaller than the budget B={budget}")

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        self.check(budget, n_candidates)
        if self.shortlist < 1:
            return min(n_candidates, max(budget, math.ceil(self.shortlist * n_candidates)))
        return min(int(self.shortlist), n_candidates)

    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        return _lcmd(top, budget, centres)


SELECTORS: Dict[str, str] = {name: f"{__name__}.{cls.__name__}" for name, cls in (
    ("top_b", TopB), ("lcmd", LCMD), ("shortlist_lcmd", ShortlistLCMD))}


def build_selector(spec: Any) -> Selector:
    """A Selector from a short name (``top_b``, ``lcmd``, ``shortlist_lcmd``), an import path,
    ``{class_path, init_args}`` or an instance."""
    return instantiate(spec, Selector, SELECTORS, what="selector")
