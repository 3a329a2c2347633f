"""Probe vectors v ∈ R^{N×3} for force rows Jᵀv (docs/design.md §4, NTK-F).

- ``rademacher``: ±1 entries from a counter-based hash of (structure id, seed, probe
  index, atom index inside its structure, component) — deterministic per structure
  whatever batch it lands in, on any device, with no Python loop over structures.
- ``one_hot``: exact rows, slot r = 3·atom + component of every graph at once.
- ``force_direction``: F̂ = F / (‖F‖ + ε) per graph, detached.
"""

from __future__ import annotations

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x · c) mod 2³² for int64 x in [0, 2³²) and c < 2³², without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def hash32(x: Tensor) -> Tensor:
    """MurmurHash3's fmix32 finaliser on int64 tensors holding 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _mix(h: Tensor, v: Tensor) -> Tensor:
    """Absorb a 64-bit value v into the running 32-bit hash h."""
    v = (v ^ (v >> 32)) & _M32
    return hash32(h ^ hash32(v + 0x9E3779B9))


def rademacher(
    ids: Tensor, batch: Tensor, local: Tensor, seed: int, probe: int, dtype: torch.dtype = torch.float64
) -> Tensor:
    """±1 probe (N, 3) for every node; a function of (ids[batch], local, component, seed, probe).

    ids: (G,) structure ids, batch: (N,) graph of each node, local: (N,) atom index in graph.
    """
    sid = ids.to(torch.int64)[batch]
    h = _mix(torch.full_like(sid, 0x5BD1E995), torch.full_like(sid, int(seed)))
    h = _mix(_mix(h, torch.full_like(sid, int(probe))), sid)
    h = _mix(h, local.to(torch.int64))[:, None]
    comp = torch.arange(3, device=h.device, dtype=torch.int64)[None, :]
    bits = (hash32(h ^ hash32(comp + 0x632BE5AB)) >> 7) & 1
    return 1.0 - 2.0 * bits.to(dtype)


def one_hot(local: Tensor, row: int, dtype: torch.dtype) -> Tensor:
    """(N, 3) with 1 at (atom ``row // 3``, component ``row % 3``) of every graph."""
    v = torch.zeros(local.numel(), 3, dtype=dtype, device=local.device)
    v[:, row % 3] = (local == row // 3).to(dtype)
    return v


def force_direction(forces: Tensor, batch: Tensor, n_graphs: int, eps: float = 1e-8) -> Tensor:
    """F̂ = F / (‖F_g‖ + ε) (N, 3), norms over each graph's 3N components; detached."""
    f = forces.detach()
    sq = torch.zeros(n_graphs, dtype=f.dtype, device=f.device).index_add_(0, batch, (f * f).sum(1))
    return f / (sq.sqrt() + eps)[batch, None]
