"""Per-graph zero perturbations of ``o3.Linear`` weights (docs/design.md §4, the core trick).

Structures in a batch are disconnected graphs. For a selected weight W we add a zero
leaf Δ ∈ R^{G×|W|} so that a node of graph g uses W + Δ[g]; then for any per-graph
scalar L_g, ∂(Σ_g L_g)/∂Δ[g] = ∂L_g/∂W exactly, for a whole batch in one backward.

By linearity f(x; W + Δ_g) = f(x; W) + f(x; Δ_g), so a forward hook adds f(x; Δ_g) to
the layer's output, evaluated per instruction block as a padded batched matmul
(nodes → (G, n_max, ·), ``einsum`` against Δ viewed (G, mul_in, mul_out)): memory
O(G·p + G·n_max·dim), never per-node weight copies; it is twice differentiable, so the
same leaves give mixed parameter-coordinate derivatives (force features).

Hooks live only inside ``attached(...)``: the model is untouched afterwards (no
parameters or buffers change; Δ = 0 adds exact zeros).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from al_lightning.features.params import LinearTarget, ParamSubset

DeltaFn = Callable[[Tensor], Tensor]


class Padding(NamedTuple):
    """Node ↔ padded-slot map for a batch with contiguous graphs.

    index: (N,) flat slot g·n_max + local; batch: (N,) graph of each node;
    local: (N,) index of a node inside its graph; n_atoms: (G,).
    """

    index: Tensor
    batch: Tensor
    local: Tensor
    n_atoms: Tensor
    n_graphs: int
    n_max: int


def make_padding(batch: Tensor, ptr: Tensor) -> Padding:
    """Padding for mace's ``batch`` (N,) and ``ptr`` (G+1,) tensors (nodes sorted by graph)."""
    n_atoms = ptr[1:] - ptr[:-1]
    n_graphs = int(n_atoms.numel())
    n_max = int(n_atoms.max()) if n_graphs else 0
    local = torch.arange(batch.numel(), device=batch.device) - ptr[batch]
    return Padding(batch * n_max + local, batch, local, n_atoms, n_graphs, n_max)


def pad_nodes(x: Tensor, pad: Padding) -> Tensor:
    """(N, D) node rows -> (G, n_max, D), zeros in the padding; differentiable."""
    flat = x.new_zeros(pad.n_graphs * pad.n_max, x.shape[-1]).index_copy(0, pad.index, x)
    return flat.view(pad.n_graphs, pad.n_max, x.shape[-1])


def unpad_nodes(y: Tensor, pad: Padding) -> Tensor:
    """(G, n_max, D) -> (N, D); inverse of ``pad_nodes`` on the occupied slots."""
    return y.reshape(pad.n_graphs * pad.n_max, y.shape[-1]).index_select(0, pad.index)


def assemble_out(parts: dict, target: LinearTarget, like: Tensor) -> Tensor:
    """Sum block outputs per output irrep slice and concatenate along the last dim.

    parts: {out_start: [Tensor (..., out_stop - out_start)]}; like: (..., *) template.
    """
    cols = []
    for start, stop in target.out_slices:
        if start in parts:
            cols.append(parts[start][0] if len(parts[start]) == 1 else sum(parts[start]))
        else:
            cols.append(like.new_zeros(*like.shape[:-1], stop - start))
    return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)


def linear_delta(x: Tensor, delta: Tensor, target: LinearTarget, pad: Padding) -> Tensor:
    """f(x_n; Δ[batch[n]]) of an ``o3.Linear`` for all nodes by padded block matmuls.

    x: (N, irreps_in.dim), delta: (G, numel) in e3nn flat weight layout -> (N, irreps_out.dim).
    """
    xp = pad_nodes(x, pad)
    g, n = pad.n_graphs, pad.n_max
    parts: dict = {}
    for b in target.blocks:
        xb = xp[..., b.in_start:b.in_stop].reshape(g, n, b.mul_in, b.ir_dim)
        w = delta[:, b.w_offset:b.w_offset + b.numel].reshape(g, b.mul_in, b.mul_out)
        y = torch.einsum("gnui,guw->gnwi", xb, w).reshape(g, n, b.mul_out * b.ir_dim)
        parts.setdefault(b.out_start, []).append(b.path_weight * y)
    return unpad_nodes(assemble_out(parts, target, xp[..., :1]), pad)


def _hook(fn: DeltaFn, n_nodes: int, name: str) -> Callable:
    def hook(module, args, kwargs, out):  # noqa: ANN001
        x = args[0] if args else kwargs["features"]
        if x.dim() != 2 or x.shape[0] != n_nodes:
            raise RuntimeError(f"{name}: per-graph perturbation needs node inputs (N={n_nodes}, D), "
                               f"got {tuple(x.shape)}")
        return out + fn(x)

    return hook


@contextlib.contextmanager
def attached(targets: Sequence[LinearTarget], fns: Sequence[DeltaFn], n_nodes: int) -> Iterator[None]:
    """Within the block, each target's output gains ``fn(input)``; hooks removed on exit."""
    handles = []
    try:
        for t, fn in zip(targets, fns):
            handles.append(t.module.register_forward_hook(_hook(fn, n_nodes, t.name), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


class Perturbation:
    """Exact per-graph perturbation: one zero leaf (G, |W|) per selected weight."""

    def __init__(self, subset: ParamSubset, pad: Padding, dtype: torch.dtype, device: torch.device):
        self.subset, self.pad = subset, pad
        self.dim = subset.p
        self.leaves: List[Tensor] = [
            torch.zeros(pad.n_graphs, t.numel, dtype=dtype, device=device, requires_grad=True)
            for t in subset.targets
        ]

    def fns(self) -> List[DeltaFn]:
        return [lambda x, d=d, t=t: linear_delta(x, d, t, self.pad)
                for d, t in zip(self.leaves, self.subset.targets)]

    def collect(self, grads: Sequence[Optional[Tensor]]) -> Tensor:
        """Gradients w.r.t. the leaves -> features (G, p) (None, i.e. unused, -> zeros)."""
        cols = [torch.zeros_like(d) if g is None else g for g, d in zip(grads, self.leaves)]
        return torch.cat(cols, dim=1)
