"""Seeded sketches of per-structure gradients to a chosen dimension d (docs/design.md §4).

``TensorSketch(d, seed)`` — never forms the per-structure gradient. For each selected
instruction block b (weight (mul_in, mul_out)) draw Gaussian P_b ∈ R^{mul_in×d},
Q_b ∈ R^{mul_out×d}; the sketch of a gradient φ = (G_b)_b is

    s[l] = d^{-1/2} Σ_b ⟨G_b, P_b[:, l] Q_b[:, l]ᵀ⟩ = (S φ)[l],

an implicit Gaussian-like projection S with E[SᵀS] = I, so ⟨s, s'⟩ is an unbiased
estimate of ⟨φ, φ'⟩ (as bmdal_reg's (x P) ⊙ (g Q)). It is computed by perturbing the
weights along the sketch directions only: Δ_g = d^{-1/2} Σ_l c[g, l] P_l Q_lᵀ with a
zero leaf c ∈ R^{G×d}, evaluated as ((x P) ⊙ c[batch]) Qᵀ per node, so ∂L_g/∂c[g] = s_g
for any per-graph scalar (energies, force probes alike). Memory O(G·d + N·d) and no
(G, mul_in·mul_out) tensor ever exists.

``GaussianSketch(d, seed)`` — a dense seeded Gaussian S (d × p, entries N(0, 1/d))
applied to the exact features: forms φ (G, p) first, so only for small p (readouts).
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from al_lightning.features.params import LinearTarget, ParamSubset
from al_lightning.features.perturb import DeltaFn, Padding, Perturbation, assemble_out


def _gaussian(shape: Tuple[int, ...], key: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Seeded N(0, 1) tensor, drawn on CPU in float64 (device/dtype independent values)."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def sketch_delta(x: Tensor, cn: Tensor, target: LinearTarget, factors: Sequence[Tuple[Tensor, Tensor]]) -> Tensor:
    """Σ_l cn[n, l] f(x_n; P_l Q_lᵀ) for all nodes: x (N, D_in), cn (N, d) -> (N, D_out)."""
    n = x.shape[0]
    parts: dict = {}
    for b, (p, q) in zip(target.blocks, factors):
        xb = x[:, b.in_start:b.in_stop].reshape(n, b.mul_in, b.ir_dim)
        y = torch.einsum("nui,ul->nli", xb, p) * cn[:, :, None]
        z = torch.einsum("nli,wl->nwi", y, q).reshape(n, b.mul_out * b.ir_dim)
        parts.setdefault(b.out_start, []).append(b.path_weight * z)
    return assemble_out(parts, target, x[:, :1])


class TensorSketch:
    """Implicit low-rank sketch to ``dim`` features; seeded by (seed, parameter name, block)."""

    def __init__(self, dim: int, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)
        self._cache: Dict[tuple, List[Tuple[Tensor, Tensor]]] = {}

    def factors(self, target: LinearTarget, dtype: torch.dtype, device: torch.device) -> List[Tuple[Tensor, Tensor]]:
        """[(P_b (mul_in, d) · d^{-1/2}, Q_b (mul_out, d))] for the target's blocks (cached)."""
        key = (target.name, dtype, str(device))
        if key not in self._cache:
            out = []
            for i, b in enumerate(target.blocks):
                k = f"tensor:{self.seed}:{target.name}:{i}"
                p = _gaussian((b.mul_in, self.dim), k + ":P", dtype, device) * self.dim ** -0.5
                out.append((p, _gaussian((b.mul_out, self.dim), k + ":Q", dtype, device)))
            self._cache[key] = out
        return self._cache[key]

    def matrix(self, subset: ParamSubset, dtype: torch.dtype = torch.float64) -> Tensor:
        """The implicit S (d, p) made explicit — for tests on small p only."""
        cols = []
        for t in subset.targets:
            for b, (p, q) in zip(t.blocks, self.factors(t, dtype, torch.device("cpu"))):
                cols.append(torch.einsum("ul,wl->luw", p, q).reshape(self.dim, b.numel))
        return torch.cat(cols, dim=1)

    def perturbation(self, subset: ParamSubset, pad: Padding, dtype: torch.dtype,
                     device: torch.device) -> "SketchPerturbation":
        return SketchPerturbation(self, subset, pad, dtype, device)


class SketchPerturbation:
    """One zero leaf c (G, d) shared by all selected weights; gradients are the sketch."""

    def __init__(self, sketch: TensorSketch, subset: ParamSubset, pad: Padding, dtype: torch.dtype,
                 device: torch.device):
        self.sketch, self.subset, self.pad = sketch, subset, pad
        self.leaves = [torch.zeros(pad.n_graphs, sketch.dim, dtype=dtype, device=device, requires_grad=True)]
        self.dim = sketch.dim

    def fns(self) -> List[DeltaFn]:
        cn = self.leaves[0].index_select(0, self.pad.batch)
        dt, dev = cn.dtype, cn.device
        return [lambda x, t=t: sketch_delta(x, cn, t, self.sketch.factors(t, dt, dev))
                for t in self.subset.targets]

    def collect(self, grads: Sequence[Optional[Tensor]]) -> Tensor:
        return torch.zeros_like(self.leaves[0]) if grads[0] is None else grads[0]


class GaussianSketch:
    """Dense seeded Gaussian projection of the exact features (forms φ; small p only)."""

    def __init__(self, dim: int, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)
        self._cache: Dict[tuple, Tensor] = {}

    def matrix(self, p: int, dtype: torch.dtype = torch.float64, device: torch.device = torch.device("cpu")) -> Tensor:
        """S (d, p), entries N(0, 1/d), seeded by (seed, p)."""
        key = (p, dtype, str(device))
        if key not in self._cache:
            self._cache[key] = _gaussian((self.dim, p), f"gauss:{self.seed}:{p}", dtype, device) * self.dim ** -0.5
        return self._cache[key]

    def project(self, phi: Tensor) -> Tensor:
        """(..., p) -> (..., d)."""
        return phi @ self.matrix(phi.shape[-1], phi.dtype, phi.device).T

    def perturbation(self, subset: ParamSubset, pad: Padding, dtype: torch.dtype,
                     device: torch.device) -> Perturbation:
        pert = Perturbation(subset, pad, dtype, device)
        exact = pert.collect
        pert.collect = lambda grads: self.project(exact(grads))  # type: ignore[method-assign]
        pert.dim = self.dim  # type: ignore[misc]
        return pert
