"""Streaming top-K of (score, id, vector) over a chunked pool (docs/design.md §5, §6).

Order (a strict total order, so results never depend on chunking or sharding): higher
score first; among equal scores the **lower id** first. Ids must be unique. NaN scores
are rejected. Memory: the K shortlist (vectors in one preallocated (K, d) buffer,
written in place) plus the current chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["StreamingTopK", "TopK", "merge_topk", "rank_order"]


def rank_order(scores: Tensor, ids: Tensor) -> Tensor:
    """Permutation sorting by (score descending, id ascending). (n,), (n,) → (n,) long."""
    by_id = torch.argsort(ids, stable=True)
    by_score = torch.argsort(scores[by_id], descending=True, stable=True)
    return by_id[by_score]


@dataclass(frozen=True)
class TopK:
    """A shortlist: scores (k,) float64, ids (k,) int64, vectors (k, d) or None, best first."""

    scores: Tensor
    ids: Tensor
    vectors: Tensor | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _check_chunk(scores: Tensor, ids: Tensor | Sequence[int], vectors: Tensor | None):
    """Validate one chunk → (scores (n,) float64, ids (n,) int64, vectors (n, d) | None)."""
    scores = torch.as_tensor(scores).reshape(-1).to(torch.float64)
    ids = torch.as_tensor(ids).reshape(-1)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be integers, got {ids.dtype}")
    ids = ids.to(torch.int64, copy=False).to(scores.device)
    if scores.shape != ids.shape:
        raise ValueError(f"{scores.shape[0]} scores but {ids.shape[0]} ids")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    if ids.numel() > 1 and int(torch.unique(ids).numel()) != int(ids.numel()):
        raise ValueError("duplicate ids within one chunk")
    if vectors is not None:
        if vectors.dim() != 2 or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"vectors must be (n={ids.shape[0]}, d), got {tuple(vectors.shape)}")
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError("vectors contain non-finite values")
    return scores, ids, vectors


class StreamingTopK:
    """Running top-k of (score, id, vector); see the module docstring for the order."""

    def __init__(self, k: int, vector_dtype: torch.dtype | None = None) -> None:
        if int(k) <= 0:
            raise ValueError(f"k must be positive, got {k}")
        self.k = int(k)
        self.vector_dtype = vector_dtype
        self._scores = torch.empty(0, dtype=torch.float64)
        self._ids = torch.empty(0, dtype=torch.int64)
        self._slots = torch.empty(0, dtype=torch.int64)  # row of _buf per entry
        self._buf: Tensor | None = None
        self._has_vectors: bool | None = None
        self.n_seen = 0

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def _filter(self, scores: Tensor, ids: Tensor) -> Tensor:
        """Mask of chunk entries that beat the current k-th entry (all if not full)."""
        if len(self) < self.k:
            return torch.ones_like(ids, dtype=torch.bool)
        s_min, id_min = self._scores[-1], self._ids[-1]
        return (scores > s_min) | ((scores == s_min) & (ids < id_min))

    def _store(self, vectors: Tensor, keep_old: Tensor, new_rows: Tensor) -> Tensor:
        """Write chosen chunk vectors into free buffer rows; returns their slots."""
        if self._buf is None:
            dtype = self.vector_dtype or vectors.dtype
            self._buf = torch.empty(self.k, vectors.shape[1], dtype=dtype, device=vectors.device)
        elif vectors.shape[1] != self._buf.shape[1]:
            raise ValueError(f"vector dim {vectors.shape[1]} != earlier {self._buf.shape[1]}")
        used = torch.zeros(self.k, dtype=torch.bool, device=self._buf.device)
        used[self._slots[keep_old]] = True
        free = torch.nonzero(~used).reshape(-1)[: new_rows.numel()]
        self._buf[free] = vectors[new_rows].to(self._buf.dtype)
        return free

    def update(self, scores: Tensor, ids: Tensor | Sequence[int], vectors: Tensor | None = None):
        """Merge one chunk: scores (n,), ids (n,), vectors (n, d) or None (as on the first call)."""
        scores, ids, vectors = _check_chunk(scores, ids, vectors)
        if self._has_vectors is None:
            self._has_vectors = vectors is not None
        elif self._has_vectors != (vectors is not None):
            raise ValueError("every chunk must carry vectors, or none")
        self.n_seen += int(ids.numel())
        if not len(self):  # the shortlist lives on the device of the scores
            dev = scores.device
            self._scores, self._ids, self._slots = (t.to(dev) for t in (self._scores, self._ids, self._slots))
        elif bool(torch.isin(ids, self._ids).any()):
            raise ValueError("an id in this chunk is already in the shortlist (ids must be unique)")
        cand = torch.nonzero(self._filter(scores, ids)).reshape(-1)
        if cand.numel() == 0:
            return
        n_old = len(self)
        all_scores = torch.cat([self._scores, scores[cand]])
        all_ids = torch.cat([self._ids, ids[cand]])
        keep = rank_order(all_scores, all_ids)[: self.k]
        is_old = keep < n_old
        slots = torch.full_like(keep, -1)
        if vectors is not None:
            new_rows = cand[keep[~is_old] - n_old]
            slots[~is_old] = self._store(vectors, keep[is_old], new_rows)
            slots[is_old] = self._slots[keep[is_old]]
        self._scores, self._ids, self._slots = all_scores[keep], all_ids[keep], slots

    def state_dict(self) -> dict:
        """Everything the shortlist holds (CPU tensors, numbers, strings: loads weights-only)."""
        buf = None if self._buf is None else self._buf.cpu()
        return {"k": self.k, "scores": self._scores.cpu(), "ids": self._ids.cpu(), "slots": self._slots.cpu(),
                "buf": buf, "has_vectors": self._has_vectors, "n_seen": self.n_seen,
                "vector_dtype": None if self.vector_dtype is None else str(self.vector_dtype).removeprefix("torch.")}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Continue from :meth:`state_dict` (its tensors moved to ``device``). Refuses another k."""
        if int(state["k"]) != self.k:
            raise ValueError(f"saved shortlist has k = {state['k']}, this one k = {self.k}")
        self._scores, self._ids, self._slots = (state[n].to(device) for n in ("scores", "ids", "slots"))
        self._buf = None if state["buf"] is None else state["buf"].to(device)
        self._has_vectors, self.n_seen = state["has_vectors"], int(state["n_seen"])
        dtype = state["vector_dtype"]
        self.vector_dtype = None if dtype is None else getattr(torch, dtype)

    def result(self) -> TopK:
        """The shortlist, best first (vectors gathered into a new (k, d) tensor)."""
        vecs = None
        if self._has_vectors and self._buf is not None:
            vecs = self._buf[self._slots]
        return TopK(self._scores.clone(), self._ids.clone(), vecs)


def merge_topk(parts: Iterable[TopK], k: int) -> TopK:
    """Global top-k of several per-rank shortlists; equals a single pass over all chunks.

    Deterministic (total order, independent of the order of ``parts``). Raises ValueError
    on duplicate ids across parts or on a mix of parts with and without vectors.
    """
    parts = [p for p in parts if len(p)]
    if int(k) <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if not parts:
        return TopK(torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.int64))
    with_vecs = {p.vectors is not None for p in parts}
    if len(with_vecs) != 1:
        raise ValueError("some shortlists carry vectors and some do not")
    scores = torch.cat([p.scores.to(torch.float64) for p in parts])
    ids = torch.cat([p.ids.to(torch.int64) for p in parts])
    if int(torch.unique(ids).numel()) != int(ids.numel()):
        raise ValueError("the same id appears in more than one shortlist")
    keep = rank_order(scores, ids)[: int(k)]
    vecs = _gather_vectors(parts, keep) if with_vecs == {True} else None
    return TopK(scores[keep], ids[keep], vecs)


def _gather_vectors(parts: Sequence[TopK], keep: Tensor) -> Tensor:
    """Rows ``keep`` of the parts' stacked vectors, without concatenating them all."""
    first = parts[0].vectors
    if first is None:
        raise ValueError("shortlists carry no vectors")
    out = torch.empty(keep.numel(), first.shape[1], dtype=first.dtype, device=first.device)
    start = 0
    for part in parts:
        vecs = part.vectors
        if vecs is None or vecs.shape[1] != first.shape[1]:
            raise ValueError("shortlists carry vectors of different dimensions")
        mine = (keep >= start) & (keep < start + len(part))
        out[mine] = vecs[keep[mine] - start].to(dtype=out.dtype, device=out.device)
        start += len(part)
    return out
