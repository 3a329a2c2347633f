"""Selectors (docs/design.md §5): B ids out of a scored pool — bmdal_reg's selection step.

The engine streams the pool through a strategy's scorer into a running top-K of
K = :meth:`Selector.shortlist_size` candidates (with their LCMD vectors), merges the ranks'
shortlists and lets the selector choose on rank 0. Built-in selectors (short names):

- ``top_b`` :class:`TopB`: the B highest scores (K = B);
- ``lcmd`` :class:`LCMD`: LCMD over the whole pool (K = every candidate; ``scored = False``: the
  scorer computes no posterior variance, only the vectors);
- ``shortlist_lcmd`` :class:`ShortlistLCMD`: LCMD on the K highest scores (K a count, or a fraction of
  the candidates, at least B);
- ``balanced`` :class:`BalancedLCMD`: part of the batch by LCMD on the K highest scores (uncertain
  structures, in distribution), the rest by LCMD over the whole pool (coverage), which treats the
  first part as already labeled.

LCMD runs on the shortlist ordered by id, with the labeled set's vectors as fixed centres
(:func:`~al_lightning.acquisition.lcmd.select_lcmd_ids`). Your own selector: subclass
:class:`Selector`, give it by class_path (``campaign.strategy_kwargs: {selector: {class_path: …}}``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, Optional, Union

import numpy as np
import torch
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


def _shortlist_size(shortlist: Union[int, float], n_candidates: int, budget: int, name: str) -> int:
    """K of a ``shortlist`` option: a count (>= B), or max(B, ⌈fraction · n⌉); at most n."""
    if 1 <= shortlist < budget:
        raise ValueError(f"selector {name}: shortlist K={shortlist} is smaller than the budget B={budget}")
    if shortlist < 1:
        return min(n_candidates, max(budget, math.ceil(shortlist * n_candidates)))
    return min(int(shortlist), n_candidates)


def _check_shortlist(shortlist: Union[int, float]) -> None:
    if not (shortlist >= 1 or 0 < shortlist < 1):
        raise ValueError(f"shortlist must be >= 1 or a fraction in (0, 1), got {shortlist}")


class ShortlistLCMD(Selector):
    """``shortlist_lcmd``: LCMD on the ``shortlist`` best-scored candidates: a count, or a fraction of
    the candidates when < 1 (e.g. 0.06: 6 % of the pool, at least B)."""

    def __init__(self, shortlist: Union[int, float] = 0.06) -> None:
        _check_shortlist(shortlist)
        self.shortlist = shortlist

    def check(self, budget: int, n_candidates: int) -> None:
        _shortlist_size(self.shortlist, n_candidates, budget, "shortlist_lcmd")

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        return _shortlist_size(self.shortlist, n_candidates, budget, "shortlist_lcmd")

    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        return _lcmd(top, budget, centres)


class BalancedLCMD(Selector):
    """``balanced``: B − ⌊``pool_share`` · B + ½⌋ ids by LCMD on the ``shortlist`` best-scored candidates,
    then ⌊``pool_share`` · B + ½⌋ by LCMD over every other candidate with the first ones as fixed
    centres (no structure twice, the second part away from the first). ``pool_share`` 0 is
    ``shortlist_lcmd``, 1 is ``lcmd``; the pool pass keeps every candidate's vector (as ``lcmd`` does)."""

    def __init__(self, shortlist: Union[int, float] = 0.06, pool_share: float = 0.5) -> None:
        _check_shortlist(shortlist)
        if not 0.0 <= pool_share <= 1.0:
            raise ValueError(f"pool_share must be in [0, 1], got {pool_share}")
        self.shortlist, self.pool_share = shortlist, pool_share

    def check(self, budget: int, n_candidates: int) -> None:
        _shortlist_size(self.shortlist, n_candidates, budget, "balanced")

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        return n_candidates

    def choose(self, top: TopK, budget: int, centres: Optional[Tensor] = None) -> np.ndarray:
        n_pool = math.floor(self.pool_share * budget + 0.5)  # half up (Python's round() halves to even)
        k = _shortlist_size(self.shortlist, len(top), budget, "balanced")
        first = _lcmd(TopK(top.scores[:k], top.ids[:k], top.vectors[:k]), budget - n_pool, centres) \
            if budget > n_pool else np.empty(0, dtype=np.int64)
        if not n_pool:
            return first
        rest = ~torch.isin(top.ids, torch.as_tensor(first, device=top.ids.device))
        picked = top.vectors[~rest]
        if centres is not None and len(centres):
            picked = torch.cat([centres, picked.to(device=centres.device, dtype=centres.dtype)])
        second = _lcmd(TopK(top.scores[rest], top.ids[rest], top.vectors[rest]), n_pool, picked)
        return np.concatenate([first, second]).astype(np.int64)


SELECTORS: Dict[str, str] = {name: f"{__name__}.{cls.__name__}" for name, cls in (
    ("top_b", TopB), ("lcmd", LCMD), ("shortlist_lcmd", ShortlistLCMD), ("balanced", BalancedLCMD))}


def build_selector(spec: Any) -> Selector:
    """A Selector from a short name (``top_b``, ``lcmd``, ``shortlist_lcmd``, ``balanced``), an import path,
    ``{class_path, init_args}`` or an instance."""
    return instantiate(spec, Selector, SELECTORS, what="selector")
