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

The same S can also be applied to a target's *exact* per-structure gradient (``mode``):
``implicit`` perturbs along the d directions (cost ∝ N·d·(mul_in + mul_out) per block, N
nodes); ``explicit`` takes the exact gradient by the (G, |W|) perturbation of perturb.py and
projects it, s = Σ_b P_bᵀ G_b Q_b diagonal (cost ∝ N·mul_in·mul_out + G·mul_in·mul_out·d,
memory G·|W| for that layer only); ``auto`` (default) picks per layer the cheaper of the two and
never materialises a layer's gradients above ``max_explicit`` elements (G·|W|). Both give the
same s up to rounding (tested), so the choice is a cost, never a result.

``GaussianSketch(d, seed)`` — a dense seeded Gaussian S (d × p, entries N(0, 1/d))
applied to the exact features: forms φ (G, p) first, so only for small p (readouts).
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from al_lightning.features.params import LinearTarget, ParamSubset
from al_lightning.features.perturb import DeltaFn, Padding, Perturbation, assemble_out, linear_delta

SKETCH_MODES = ("auto", "implicit", "explicit")


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


def project_exact(grad: Tensor, target: LinearTarget, factors: Sequence[Tuple[Tensor, Tensor]]) -> Tensor:
    """S_target · g for exact per-graph gradients ``grad`` (G, |W|) (e3nn flat layout) -> (G, d)."""
    out = None
    for b, (p, q) in zip(target.blocks, factors):
        gb = grad[:, b.w_offset:b.w_offset + b.numel].reshape(-1, b.mul_in, b.mul_out)
        s = torch.einsum("guw,ul->glw", gb, p).mul_(q.T).sum(dim=2)
        out = s if out is None else out + s
    return out


class TensorSketch:
    """Low-rank sketch to ``dim`` features; seeded by (seed, parameter name, block).

    ``mode``: ``auto`` | ``implicit`` | ``explicit`` (module docstring); ``max_explicit``: the
    largest G·|W| a layer's exact gradients may take in ``auto`` mode."""

    def __init__(self, dim: int, seed: int = 0, mode: str = "auto", max_explicit: int = 1 << 24):
        if mode not in SKETCH_MODES:
            raise ValueError(f"sketch mode must be one of {SKETCH_MODES}, got {mode!r}")
        self.dim, self.seed, self.mode, self.max_explicit = int(dim), int(seed), mode, int(max_explicit)
        self._cache: Dict[tuple, List[Tuple[Tensor, Tensor]]] = {}

    def explicit(self, target: LinearTarget, pad: Padding) -> bool:
        """Whether this layer is sketched from its exact gradients (a cost choice only)."""
        if self.mode != "auto":
            return self.mode == "explicit"
        n, g = max(int(pad.n_atoms.sum()), 1), pad.n_graphs
        implicit = sum(n * self.dim * (b.mul_in + b.mul_out) * b.ir_dim for b in target.blocks)
        explicit = sum(n * b.numel * b.ir_dim + g * b.numel * self.dim for b in target.blocks)
        return explicit < implicit and g * target.numel <= self.max_explicit

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

    def perturbation(self, subset: ParamSubset, pad: Padding, dtype: torch.dtype,
                     device: torch.device) -> "SketchPerturbation":
        return SketchPerturbation(self, subset, pad, dtype, device)


class SketchPerturbation:
    """One zero leaf c (G, d) shared by the implicitly sketched weights (its gradient is their
    sketch), plus an exact (G, |W|) leaf per explicitly sketched weight (projected in collect)."""

    def __init__(self, sketch: TensorSketch, subset: ParamSubset, pad: Padding, dtype: torch.dtype,
                 device: torch.device):
        self.sketch, self.subset, self.pad = sketch, subset, pad
        self.explicit = [sketch.explicit(t, pad) for t in subset.targets]
        self.leaves = [torch.zeros(pad.n_graphs, sketch.dim, dtype=dtype, device=device, requires_grad=True)]
        self.leaves += [torch.zeros(pad.n_graphs, t.numel, dtype=dtype, device=device, requires_grad=True)
                        for t, e in zip(subset.targets, self.explicit) if e]
        self.dim = sketch.dim

    def fns(self) -> List[DeltaFn]:
        cn = self.leaves[0].index_select(0, self.pad.batch)
        dt, dev = cn.dtype, cn.device
        exact = iter(self.leaves[1:])
        return [(lambda x, t=t, d=next(exact): linear_delta(x, d, t, self.pad)) if e else
                (lambda x, t=t: sketch_delta(x, cn, t, self.sketch.factors(t, dt, dev)))
                for t, e in zip(self.subset.targets, self.explicit)]

    def collect(self, grads: Sequence[Optional[Tensor]]) -> Tensor:
        out = torch.zeros_like(self.leaves[0]) if grads[0] is None else grads[0]
        explicit = [t for t, e in zip(self.subset.targets, self.explicit) if e]
        for t, g in zip(explicit, grads[1:]):
            if g is not None:
                out = out + project_exact(g, t, self.sketch.factors(t, g.dtype, g.device))
        return out


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
