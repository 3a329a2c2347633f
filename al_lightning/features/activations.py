"""Baseline ``activation`` features: per-structure sum or mean of last-layer invariant
node features (docs/design.md §4, activation PV).

Default source ``"readout_input"``: the invariant inputs of the *last* ``o3.Linear`` of
the last readout (for MACE's MLP readout: the gated hidden activations; for a linear
readout: the last product's scalars) — bmdal's "last-layer" features. With this source,
the per-structure sum equals, up to the constant path weight × ScaleShift scale, the
extensive NTK-E block of that last linear (a free consistency test). Source
``"node_feats"``: the invariant channels of the last product block's output.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch
from torch import Tensor

import al_lightning  # noqa: F401  (mace before e3nn.o3)
from e3nn import o3

SOURCES = ("readout_input", "node_feats")


def last_readout_linear(model: torch.nn.Module) -> o3.Linear:
    """The last ``o3.Linear`` (registration order) inside ``model.readouts[-1]``."""
    lins = [m for m in model.readouts[-1].modules() if isinstance(m, o3.Linear)]  # type: ignore[index]
    if not lins:
        raise ValueError("the last readout has no o3.Linear")
    return lins[-1]


def invariant_columns(irreps: o3.Irreps) -> Tensor:
    """Column indices (long) of the scalar (0e) channels of a feature with these irreps."""
    cols = [torch.arange(sl.start, sl.stop) for sl, (_, ir) in zip(irreps.slices(), irreps)
            if ir == o3.Irrep(0, 1)]
    return torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)


@contextlib.contextmanager
def capture_input(module: torch.nn.Module) -> Iterator[List[Tensor]]:
    """Collects the first positional input of each ``module`` call inside the block."""
    seen: List[Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


def reduce_per_graph(x: Tensor, batch: Tensor, n_atoms: Tensor, reduce: str = "sum") -> Tensor:
    """Node rows x (N, d) -> per-graph sum or mean (G, d)."""
    out = x.new_zeros(n_atoms.numel(), x.shape[1]).index_add_(0, batch, x)
    if reduce == "mean":
        return out / n_atoms.clamp(min=1).to(x.dtype)[:, None]
    if reduce != "sum":
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    return out


def last_node_invariants(model: torch.nn.Module, node_feats: Tensor) -> Tensor:
    """Invariant channels (N, d) of the last product's output within mace's ``node_feats``."""
    irreps = model.products[-1].linear.irreps_out  # type: ignore[index]
    last = node_feats[:, node_feats.shape[1] - irreps.dim:]
    return last[:, invariant_columns(irreps).to(node_feats.device)]


def readout_input_invariants(model: torch.nn.Module, x: Tensor) -> Tensor:
    """Invariant channels (N, d) of the captured input of the last readout linear."""
    return x[:, invariant_columns(last_readout_linear(model).irreps_in).to(x.device)]
