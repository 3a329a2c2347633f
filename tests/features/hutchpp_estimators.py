"""Test-only estimators (moved from al_lightning/features: no strategy uses them). Trace estimators for per-structure tr(J M Jᵀ) (the force PV) from closures only.

Batched over graphs: a ``Matvec`` maps U (G, n, m) -> (A_g U_g)_g (G, n, m), with
n = 3·n_max padded coordinates and a 0/1 ``mask`` (G, n) of real ones.

- ``hutchinson(quad, mask, k, seed)``: plain Rademacher probes, needing only the
  quadratic form vᵀAv — for A = J M Jᵀ that is (Jᵀv)ᵀ M (Jᵀv), one double backward.
- ``hutchpp(matvec, mask, m, seed)`` (Meyer, Musco, Musco, Willians 2021): m/3 matvecs
  to sketch the range, m/3 for its exact trace, the rest Hutchinson on the deflated
  remainder. Each matvec of J M Jᵀ needs a J·w product (a VJP through a VJP, i.e. a
  third-order backward), dearer than a probe: compare at equal measured cost.

``force_matvecs`` builds the Jᵀ and J closures of a batch from one forward.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from al_lightning.features.ntk import batch_dict, energy_backward, forward_pass, grad_mode
from al_lightning.features.params import resolve_params
from al_lightning.features.perturb import Padding, pad_nodes, unpad_nodes

Matvec = Callable[[Tensor], Tensor]


def rademacher_block(mask: Tensor, m: int, seed: int) -> Tensor:
    """±1 (G, n, m), zero on padded coordinates; seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randint(0, 2, (*mask.shape, m), generator=gen).to(mask.dtype) * 2 - 1
    return v.to(mask.device) * mask[..., None]


def hutchinson(quad: Callable[[Tensor], Tensor], mask: Tensor, k: int, seed: int = 0) -> Tensor:
    """Σ_j v_jᵀ A v_j / k per graph (G,); quad: V (G, n, k) -> (G, k) values v_jᵀ A_g v_j."""
    return quad(rademacher_block(mask, k, seed)).sum(-1) / k


def orth(y: Tensor, rtol: float = 1e-10) -> Tensor:
    """Orthonormal basis of range(y) (G, n, k), zero columns for null directions."""
    u, s, _ = torch.linalg.svd(y, full_matrices=False)
    keep = s > rtol * s.amax(-1, keepdim=True)
    return u * keep[:, None, :].to(u.dtype)


def hutchpp(matvec: Matvec, mask: Tensor, m: int, seed: int = 0) -> Tensor:
    """Hutch++ estimate of tr(A_g) (G,) with m ≥ 3 matvecs per graph (batched)."""
    if m < 3:
        raise ValueError("Hutch++ needs at least 3 matvecs")
    k = m // 3
    s = rademacher_block(mask, k, seed)
    g = rademacher_block(mask, m - 2 * k, seed + 7919)
    q = orth(matvec(s))
    t_low = (q * matvec(q)).sum((1, 2))
    g = g - q @ (q.transpose(1, 2) @ g)
    return t_low + (g * matvec(g)).sum((1, 2)) / (m - 2 * k)


class ForceOperators(NamedTuple):
    """Closures of one batch: jt(U (G, n)) -> (G, p) = J_gᵀ u_g; j(W (G, p)) -> (G, n)."""

    jt: Callable[[Tensor], Tensor]
    j: Callable[[Tensor], Tensor]
    mask: Tensor
    pad: Padding
    p: int


def force_matvecs(model: torch.nn.Module, batch: Any, params: Any = "readouts") -> ForceOperators:
    """Jᵀ and J products of the force Jacobian J_g = ∂F_g/∂θ_S from one forward (kept alive)."""
    subset = resolve_params(model, params)
    with grad_mode():
        data = batch_dict(batch)
        ps = forward_pass(model, data, subset)
        forces, _ = energy_backward(ps, with_leaves=False, create_graph=True)
        u0 = torch.zeros_like(forces, requires_grad=True)
        a = torch.autograd.grad((forces * u0).sum(), ps.pert.leaves, create_graph=True, allow_unused=True)
    pad, leaves = ps.pad, ps.pert.leaves
    sizes = [leaf.shape[1] for leaf in leaves]

    def jt(u: Tensor) -> Tensor:
        v = unpad_nodes(u.reshape(pad.n_graphs, pad.n_max, 3), pad)
        with grad_mode():
            g = torch.autograd.grad((forces * v).sum(), leaves, retain_graph=True, allow_unused=True)
        return ps.pert.collect(g).detach()

    def j(w: Tensor) -> Tensor:
        with grad_mode():
            s = sum((ai * wi).sum() for ai, wi in zip(a, w.split(sizes, dim=1)) if ai is not None)
            g = torch.autograd.grad(s, u0, retain_graph=True, allow_unused=True)[0]
        g = torch.zeros_like(forces) if g is None else g
        return pad_nodes(g.detach(), pad).reshape(pad.n_graphs, 3 * pad.n_max)

    mask = pad_nodes(torch.ones_like(forces.detach()), pad).reshape(pad.n_graphs, -1)
    return ForceOperators(jt, j, mask, pad, subset.p)


def jmjt_matvec(ops: ForceOperators, metric: Tensor) -> Matvec:
    """U (G, n, m) -> J M Jᵀ U per graph, column by column; metric M (p, p) or (G, p, p)."""
    def mv(u: Tensor) -> Tensor:
        cols = []
        for c in range(u.shape[-1]):
            t = ops.jt(u[..., c])
            t = (metric @ t[..., None])[..., 0]
            cols.append(ops.j(t))
        return torch.stack(cols, dim=-1)

    return mv


def jmjt_quadform(ops: ForceOperators, metric: Tensor) -> Callable[[Tensor], Tensor]:
    """V (G, n, k) -> (G, k) values v_jᵀ J M Jᵀ v_j (one Jᵀ product per column)."""
    def quad(v: Tensor) -> Tensor:
        out = []
        for c in range(v.shape[-1]):
            t = ops.jt(v[..., c])
            out.append((t * (metric @ t[..., None])[..., 0]).sum(-1))
        return torch.stack(out, dim=-1)

    return quad
