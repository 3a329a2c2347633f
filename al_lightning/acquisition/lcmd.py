"""LCMD batch selection (Holzmüller et al., JMLR 2023; bmdal_reg ``lcmd``), docs/design.md §5.

Rule (TP mode): training vectors become centres first (without training vectors the
first pick is the pool point of largest norm). Then, B times: every pool point belongs
to its nearest centre (earliest centre on equal distance); take the cluster(s) with the
largest sum of squared distances to their centre and pick the member farthest from its
centre; it becomes a new centre. Ties: among clusters with equal maximal sums the
farthest member across them (bmdal_reg's rule), among equal distances the lowest pool
index. Picks are returned in pick order.

Distances: ‖x‖² + ‖c‖² − 2 x·c with norms and the combination in float64 and the dot
products in float64 (float64 input) or float32 on mean-centred vectors (other input).
A squared distance ≤ tol·(‖x‖² + ‖c‖²), tol = 4√d·eps, counts as exactly zero, so
duplicates of a centre (and the centres themselves) are never picked; when only such
points remain the batch is exhausted (``on_exhausted``: raise ValueError or fill with
the lowest unselected indices).

Cost: O(K·(n_T + B)·d). Training centres go through blocked matmuls of at most
``block_elems`` distances; pool centres need one distance column each, computed
``lookahead`` at a time (the pick plus the likely next picks: farthest members of the
largest clusters) so that one pass over the (K, d) matrix serves several steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["select_lcmd", "select_lcmd_ids"]

_ROW_BLOCK_BYTES = 4 << 20


@dataclass
class _State:
    x: Tensor  # (K, d) compute dtype (mean-centred unless float64)
    xn: Tensor  # (K,) float64 ‖x‖²
    min_sq: Tensor  # (K,) float64 squared distance to the nearest centre (+inf: none)
    assign: Tensor  # (K,) int64 nearest centre (0 before the first centre)
    n_centres: int
    tol: float
    row_block: int


def _flat(x: Tensor, name: str) -> Tensor:
    """(n, d) or (n, r, p) → (n, d); validates type, rank and finiteness."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (n, d) or (n, rows, p), got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has feature dimension 0")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return x


def _validate(pool: Tensor, batch_size: int, train: Tensor | None):
    """Checks inputs → (pool (K, d), train (n_T, d) | None, batch_size)."""
    x = _flat(pool, "pool")
    t = None if train is None else _flat(train, "train")
    if t is not None and t.shape[1] != x.shape[1]:
        raise ValueError(f"pool dimension {x.shape[1]} does not match train dimension {t.shape[1]}")
    if t is not None and t.shape[0] == 0:
        t = None
    try:
        ok = not isinstance(batch_size, (bool, str)) and int(batch_size) == batch_size >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size {batch_size} > number of pool points {x.shape[0]}")
    return x, t, int(batch_size)


def _row_sq_norms(x: Tensor, rows: int = 8192) -> Tensor:
    """Float64 squared norms of the rows of x (n, d) → (n,), in row chunks."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = x[s : s + rows].to(torch.float64).square().sum(dim=1)
    return out


def _row_mean(x: Tensor, rows: int = 8192) -> Tensor:
    """Float64 mean of the rows of x (n, d) → (d,), in row chunks."""
    acc = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], rows):
        acc += x[s : s + rows].to(torch.float64).sum(dim=0)
    return acc / max(1, x.shape[0])


def _init_state(x: Tensor, t: Tensor | None) -> tuple[_State, Tensor | None]:
    """Compute dtype, centring and norms → (state, train vectors in the same frame)."""
    wide = x.dtype == torch.float64 or (t is not None and t.dtype == torch.float64)
    dtype = torch.float64 if wide else torch.float32
    if wide:
        x = x.to(dtype)
        t = None if t is None else t.to(dtype=dtype, device=x.device)
    else:  # careful float32: centre so cancellation is relative to the spread, not the offset
        mu = _row_mean(x)
        x = _centre(x, mu)
        t = None if t is None else (t.to(device=x.device, dtype=torch.float64) - mu).to(dtype)
    x = x.contiguous()
    d = x.shape[1]
    tol = 4.0 * math.sqrt(d) * torch.finfo(dtype).eps
    row_block = max(64, _ROW_BLOCK_BYTES // (d * x.element_size()))
    k = x.shape[0]
    state = _State(
        x=x,
        xn=_row_sq_norms(x),
        min_sq=torch.full((k,), math.inf, dtype=torch.float64, device=x.device),
        assign=torch.zeros(k, dtype=torch.int64, device=x.device),
        n_centres=0,
        tol=tol,
        row_block=row_block,
    )
    return state, t


def _centre(x: Tensor, mu: Tensor, rows: int = 8192) -> Tensor:
    """float32 (x − mu) computed in float64 row chunks. x (n, d), mu (d,) → (n, d)."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], rows):
        out[s : s + rows] = x[s : s + rows].to(torch.float64) - mu
    return out


def _dists(x: Tensor, xn: Tensor, c: Tensor, cn: Tensor, tol: float, row_block: int) -> Tensor:
    """Squared distances of rows x (n, d) (norms xn) to c (m, d) (norms cn) → (n, m) float64.

    Distances ≤ tol·(‖x‖² + ‖c‖²) are set to exactly 0.
    """
    c = c.to(x.dtype)
    dots = torch.empty(x.shape[0], c.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], row_block):  # row blocks stay in cache for all m
        torch.mm(x[s : s + row_block], c.T, out=dots[s : s + row_block])
    norms = xn[:, None] + cn[None, :]
    d2 = dots.to(torch.float64).mul_(-2.0).add_(norms)
    return d2.masked_fill_(d2 <= norms.mul_(tol), 0.0)


def _sq_dists(state: _State, c: Tensor, cn: Tensor | None = None) -> Tensor:
    """Squared distances of all K points to centres c (m, d), norms cn (m,) → (K, m)."""
    cn = _row_sq_norms(c.to(state.x.dtype)) if cn is None else cn
    return _dists(state.x, state.xn, c, cn, state.tol, state.row_block)


def _add_train_centres(state: _State, t: Tensor, block_elems: int) -> None:
    """Make every training vector (n_T, d) a centre, in blocks of ≤ block_elems distances."""
    m = max(1, block_elems // max(1, state.x.shape[0]))
    for s in range(0, t.shape[0], m):
        d2 = _sq_dists(state, t[s : s + m])
        arg = torch.argmin(d2, dim=1)  # first (earliest) centre on ties
        best = d2.gather(1, arg[:, None]).squeeze(1)
        upd = best < state.min_sq
        state.min_sq = torch.where(upd, best, state.min_sq)
        state.assign = torch.where(upd, arg + state.n_centres, state.assign)
        state.n_centres += d2.shape[1]


def _cluster_sums(state: _State) -> Tensor:
    """Σ min_sq per centre → (n_centres,) float64."""
    return torch.bincount(state.assign, weights=state.min_sq, minlength=state.n_centres)


def _pick(state: _State, sums: Tensor) -> int | None:
    """Farthest member of the largest cluster(s); None if every point sits on a centre."""
    best = sums.max()
    cand = torch.where(sums[state.assign] == best, state.min_sq, -math.inf)
    idx = int(torch.argmax(cand))  # first maximum: lowest index on ties
    return idx if float(cand[idx]) > 0.0 else None


def _add_pool_centre(state: _State, idx: int, col: Tensor) -> None:
    """Pool point idx becomes centre n_centres; col (K,) its squared distances."""
    col[idx] = 0.0
    upd = col < state.min_sq
    state.min_sq = torch.where(upd, col, state.min_sq)
    state.assign = torch.where(upd, state.n_centres, state.assign)
    state.n_centres += 1


def _after_split(state: _State, c: int, n: int) -> tuple[list[int], list[int]]:
    """Farthest members of c's cluster once c becomes a centre: (≤ n that stay with the old
    centre, ≤ n that move to c), exact on that cluster. A cluster of > K/8 rows is not
    split exactly: its n farthest members count as staying."""
    rows = torch.nonzero(state.assign == state.assign[c]).reshape(-1)
    if rows.numel() > max(1024, state.x.shape[0] // 8):
        best = torch.topk(state.min_sq[rows], min(n + 1, rows.numel()))
        return rows[best.indices[best.values > 0]].tolist(), []
    d2 = _dists(state.x[rows], state.xn[rows], state.x[c : c + 1], state.xn[c : c + 1],
                state.tol, state.row_block)[:, 0]
    move = d2 < state.min_sq[rows]
    out = []
    for score in (torch.where(move, -math.inf, state.min_sq[rows]), torch.where(move, d2, -math.inf)):
        best = torch.topk(score, min(n, rows.numel()))
        out.append(rows[best.indices[best.values > 0]].tolist())
    return out[0], out[1]


def _interleave(*lists: list[int]) -> list[int]:
    """Round-robin merge: a[0], b[0], c[0], a[1], ..."""
    out = []
    for j in range(max(map(len, lists), default=0)):
        out += [lst[j] for lst in lists if j < len(lst)]
    return out


def _speculate(state: _State, sums: Tensor, idx: int, n: int) -> list[int]:
    """Likely next picks after idx, most likely first (≤ 4n, idx and centres excluded):
    members of idx's cluster that stay farthest from the old centre after its split, the
    farthest members of the largest clusters (the first few with their post-split
    farthest), the farthest new members of idx's cluster, then the farthest points overall."""
    k = state.x.shape[0]
    live = state.min_sq > 0
    cmax = torch.full_like(sums, -math.inf).scatter_reduce(0, state.assign, state.min_sq, "amax")
    far = torch.nonzero(live & (state.min_sq == cmax[state.assign])).reshape(-1)
    first = torch.full((state.n_centres,), k, dtype=state.assign.dtype, device=state.assign.device)
    first = first.scatter_reduce(0, state.assign[far], far, "amin")  # lowest far member
    top = torch.topk(sums, min(max(1, (2 * n) // 3 + 1), state.n_centres)).indices
    heads = []
    for j, head in enumerate(i for i in first[top].tolist() if i < k and i != idx):
        heads += [head] + (sum(_after_split(state, head, 1), []) if j < n // 5 else [])
    stay, move = _after_split(state, idx, n // 2)
    cands = _interleave(stay, heads, move)
    n_all = min(4 * n + 1, k)
    cands += torch.topk(torch.where(live, state.min_sq, -math.inf), n_all).indices.tolist()
    out = list(dict.fromkeys(c for c in cands if c != idx and bool(live[c])))
    return out[: 4 * n]


class _Columns:
    """Distance columns of pool centres, ``width`` per pass over x: the pick's plus
    speculative ones for likely next picks (at most 3·width cached)."""

    def __init__(self, width: int) -> None:
        self.width = max(1, int(width))
        self.cols: dict[int, Tensor] = {}
        self.passes = 0
        self.computed = 0
        self.hits = 0

    def get(self, state: _State, idx: int, sums: Tensor | None) -> Tensor:
        """(K,) float64 squared distances from pool point idx to every pool point."""
        if idx in self.cols:
            self.hits += 1
            return self.cols.pop(idx)
        n = self.width - 1
        want = [] if sums is None or n == 0 else _speculate(state, sums, idx, n)
        # keep cached columns of the 2n likeliest; n new ones fill the pass (same cost)
        keep = {i: self.cols[i] for i in want[: 2 * n] if i in self.cols}
        new = [i for i in want if i not in self.cols][:n]
        batch = torch.tensor([idx] + new, dtype=torch.int64, device=state.x.device)
        d2 = _sq_dists(state, state.x[batch], state.xn[batch]).T.contiguous()  # (m, K)
        keep.update((i, d2[j]) for j, i in enumerate(new, start=1))
        self.cols = keep
        self.passes += 1
        self.computed += len(new) + 1
        return d2[0]


def _exhausted(picks: list[int], k: int, b: int, mode: str) -> Tensor:
    """Handle a batch that ran out of points at positive distance from every centre."""
    if mode == "raise":
        raise ValueError(
            f"LCMD found only {len(picks)} of batch_size={b} points at positive distance from "
            "every centre: the rest coincide with training vectors or earlier picks "
            "(batch_size > number of distinct points). Use on_exhausted='fill' to complete "
            "the batch with the lowest unselected indices."
        )
    chosen = torch.zeros(k, dtype=torch.bool)
    chosen[picks] = True
    rest = torch.nonzero(~chosen).reshape(-1)[: b - len(picks)]
    return torch.cat([torch.tensor(picks, dtype=torch.int64), rest])


def select_lcmd(
    pool: Tensor,
    batch_size: int,
    train: Tensor | None = None,
    *,
    on_exhausted: str = "raise",
    lookahead: int = 16,
    block_elems: int = 1 << 22,
    stats: dict | None = None,
) -> Tensor:
    """LCMD selection of batch_size pool indices (module docstring: rule, ties, precision).

    pool: (K, d) or (K, rows, p) vectors, train: (n_T, d) or None (raw Euclidean
    distances on the vectors as given; whiten them first for the posterior space).
    Returns (batch_size,) int64 indices into pool (CPU), in pick order. ``lookahead``:
    distance columns per pass over the pool matrix (1: no speculation; same rule, only
    the rounding of the products may differ). ``block_elems``: bound on the float64
    distance block of the training-centre pass.
    ``stats``, if given, receives passes / columns / hits counters.
    """
    x, t, b = _validate(pool, batch_size, train)
    if on_exhausted not in ("raise", "fill"):
        raise ValueError(f"on_exhausted must be 'raise' or 'fill', got {on_exhausted!r}")
    if b == 0:
        return torch.empty(0, dtype=torch.int64)
    first = int(torch.argmax(_row_sq_norms(x))) if t is None else None
    state, t = _init_state(x, t)
    if t is not None:
        _add_train_centres(state, t, block_elems)
    columns = _Columns(lookahead)
    picks: list[int] = []
    for _ in range(b):
        sums = _cluster_sums(state) if state.n_centres else None
        idx = first if sums is None else _pick(state, sums)
        if idx is None:
            break
        _add_pool_centre(state, idx, columns.get(state, idx, sums))
        picks.append(idx)
    if stats is not None:
        stats.update(passes=columns.passes, columns=columns.computed, hits=columns.hits)
    if len(picks) < b:
        return _exhausted(picks, x.shape[0], b, on_exhausted)
    return torch.tensor(picks, dtype=torch.int64)


def select_lcmd_ids(
    ids: Tensor, vectors: Tensor, batch_size: int, train: Tensor | None = None, **kwargs
) -> Tensor:
    """LCMD on a shortlist ordered by id. ids (K,) unique ints, vectors (K, d) → (B,) ids
    in pick order. kwargs go to :func:`select_lcmd`."""
    ids = torch.as_tensor(ids).reshape(-1)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"ids must be integers, got {ids.dtype}")
    if not isinstance(vectors, Tensor) or vectors.shape[0] != ids.shape[0]:
        raise ValueError("vectors must be a tensor with one row per id")
    if int(torch.unique(ids).numel()) != int(ids.numel()):
        raise ValueError("ids must be unique")
    order = torch.argsort(ids)
    sel = select_lcmd(vectors[order.to(vectors.device)], batch_size, train, **kwargs)
    return ids[order][sel]
