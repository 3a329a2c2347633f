"""Baseline ``descriptor`` features: MACE invariant descriptors averaged per structure
(docs/design.md §4, descriptor PV) — the 0e channels of every interaction layer's product
output (mace's ``node_feats``, as ``get_descriptors(invariants_only=True)``), meaned
over each structure's atoms.
"""

from __future__ import annotations

import torch
from torch import Tensor

from al_lightning.features.activations import invariant_columns, reduce_per_graph


def descriptor_columns(model: torch.nn.Module) -> Tensor:
    """Columns (long) of the invariant channels of all layers in mace's ``node_feats``."""
    cols, off = [], 0
    for prod in model.products:  # type: ignore[attr-defined]
        irreps = prod.linear.irreps_out
        cols.append(invariant_columns(irreps) + off)
        off += irreps.dim
    return torch.cat(cols)


def descriptors_from_node_feats(
    model: torch.nn.Module, node_feats: Tensor, batch: Tensor, n_atoms: Tensor, reduce: str = "mean"
) -> Tensor:
    """node_feats (N, Σ dims) -> per-structure invariant descriptor (G, d) (mean by default)."""
    x = node_feats[:, descriptor_columns(model).to(node_feats.device)]
    return reduce_per_graph(x, batch, n_atoms, reduce)
