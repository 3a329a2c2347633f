"""Energy + force loss (pure functions). Shapes: G graphs, N atoms.

energy term: per-atom energy error ``(E_pred − E_ref) / n_atoms`` per graph, weighted by
``energy_weight`` (0 for graphs without an energy label), averaged over graphs;
force term: per-component error on *free* atoms (fixed atoms are not scored), graphs
without forces masked out, averaged over the scored components.
"""

from __future__ import annotations

from typing import Dict

import torch


def _elementwise(diff: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    if kind == "mse":
        return diff.square()
    if kind == "huber":
        return torch.nn.functional.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=delta)
    raise ValueError(f"loss kind must be 'mse' or 'huber', got {kind!r}")


def energy_force_loss(
    pred_energy: torch.Tensor,  # (G,)
    ref_energy: torch.Tensor,  # (G,)
    pred_forces: torch.Tensor,  # (N, 3)
    ref_forces: torch.Tensor,  # (N, 3)
    num_atoms: torch.Tensor,  # (G,)
    batch: torch.Tensor,  # (N,) graph index per atom
    free_mask: torch.Tensor,  # (N,) bool
    energy_label_weight: torch.Tensor,  # (G,) 0/1: energy label present
    forces_label_weight: torch.Tensor,  # (G,) 0/1: forces present
    energy_weight: float = 1.0,
    forces_weight: float = 10.0,
    kind: str = "mse",
    huber_delta: float = 0.01,
) -> Dict[str, torch.Tensor]:
    """Returns {"loss", "energy", "forces"} scalars; loss = w_E·energy + w_F·forces."""
    e_diff = (pred_energy - ref_energy) / num_atoms.to(pred_energy.dtype)
    e_terms = _elementwise(e_diff, kind, huber_delta) * energy_label_weight
    e_loss = e_terms.sum() / energy_label_weight.sum().clamp_min(1e-12)  # weights: 0/1, replay frames w
    atom_w = (forces_label_weight[batch] * free_mask.to(pred_forces.dtype)).unsqueeze(-1)  # (N, 1)
    f_terms = _elementwise(pred_forces - ref_forces, kind, huber_delta) * atom_w
    f_loss = f_terms.sum() / (3.0 * atom_w.sum()).clamp_min(1e-12)
    return {"loss": energy_weight * e_loss + forces_weight * f_loss, "energy": e_loss, "forces": f_loss}
