"""Force-aware NTK features of a MACE model (docs/design.md §4): NTK-E, NTK-F and the companion
pass that returns them with the energies and forces of the same forward.

All functions take a mace-torch model, a mace batch (``Batch`` or its ``to_dict()``) and
a parameter subset (preset name, names / fnmatch patterns, or a ``ParamSubset``; see
``params.py``). One forward is run with per-graph zero perturbations of the selected
``o3.Linear`` weights attached (``perturb.py``); then

- energies, forces and NTK-E come from ONE ``torch.autograd.grad`` of Σ_g E_g w.r.t.
  (positions, Δ) — φ_E(g) = ∂E_g/∂θ_S (÷ N_g when ``per_atom``);
- each force row is one more (double) backward for the whole batch:
  ∂(Σ_g v_g·F_g)/∂Δ[g] = J_gᵀ v_g with J_g = ∂F_g/∂θ_S ∈ R^{3N_g×p}:
  ``direction``: v = F̂ = F/(‖F‖+ε) (1 row; the row is ∂‖F‖/∂θ);
  ``probes``: k Rademacher rows / √k seeded by (structure id, seed), so the row sums of
  squares are an unbiased estimate of tr(J Jᵀ);
  ``exact``: 3·n_max one-hot rows, row 3i+c = ∂F_{i,c}/∂θ, zero-padded past 3N_g.

Structure ids are read from ``batch["structure_id"]`` (LongTensor (G,), global pool ids)
and default to ``arange(G)``. The model is called as ``model(data, training=False,
compute_force=False)`` with a shallow copy of the batch whose positions are a fresh leaf:
the caller's batch and the model are not modified. Gradients are enabled internally, also
under ``torch.no_grad`` / ``torch.inference_mode`` (inference-tensor batches are cloned),
so Lightning's default ``predict`` works; ``Trainer(inference_mode=False)`` avoids the copy.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterable, Iterator, NamedTuple, Optional

import torch
from torch import Tensor

from al_lightning.features.activations import (
    SOURCES,
    capture_input,
    last_node_invariants,
    last_readout_linear,
    readout_input_invariants,
    reduce_per_graph,
)
from al_lightning.features.descriptors import descriptors_from_node_feats
from al_lightning.features.params import ParamSubset, resolve_params
from al_lightning.features.perturb import Padding, Perturbation, attached, make_padding
from al_lightning.features.probes import force_direction, one_hot, rademacher

FORCE_MODES = ("direction", "probes", "exact")
STRUCTURE_ID_KEY = "structure_id"


class Features(NamedTuple):
    """Companion-pass result; fields not requested are None. G graphs, N atoms, p features.

    energy (G,), forces (N, 3) (detached, same forward); ids (G,) long; n_atoms (G,) long;
    phi_e (G, p); force_rows (G, R, p); direction (G, p) = Jᵀ F̂;
    activation (G, d_a); descriptor (G, d_d).
    """

    energy: Tensor
    forces: Tensor
    ids: Tensor
    n_atoms: Tensor
    phi_e: Optional[Tensor] = None
    force_rows: Optional[Tensor] = None
    direction: Optional[Tensor] = None
    activation: Optional[Tensor] = None
    descriptor: Optional[Tensor] = None


class _Pass(NamedTuple):
    energy: Tensor  # (G,) with graph
    positions: Tensor  # (N, 3) leaf
    out: Dict[str, Any]
    pert: Optional[Perturbation]
    pad: Padding
    act_in: Optional[Tensor]  # (N, d) input of the last readout linear


def batch_dict(batch: Any) -> Dict[str, Tensor]:
    """mace ``Batch`` or dict -> a shallow dict copy; inference tensors (made under
    ``torch.inference_mode``, e.g. Lightning's predict) are cloned into normal ones —
    call inside ``grad_mode()``."""
    d = dict(batch.to_dict() if hasattr(batch, "to_dict") else batch)
    return {k: v.clone() if isinstance(v, Tensor) and v.is_inference() else v for k, v in d.items()}


@contextlib.contextmanager
def grad_mode() -> Iterator[None]:
    """Autograd on, even inside ``torch.no_grad`` or ``torch.inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def structure_ids(data: Dict[str, Tensor], n_graphs: int) -> Tensor:
    """``data["structure_id"]`` (G,) long, or arange(G) when absent."""
    ids = data.get(STRUCTURE_ID_KEY)
    if ids is None:
        return torch.arange(n_graphs, device=data["batch"].device)
    ids = torch.as_tensor(ids, device=data["batch"].device).long().reshape(-1)
    if ids.numel() != n_graphs:
        raise ValueError(f"{STRUCTURE_ID_KEY} has {ids.numel()} entries for {n_graphs} graphs")
    return ids


def forward_pass(
    model: torch.nn.Module, data: Dict[str, Tensor], subset: Optional[ParamSubset],
    sketch: Any = None, capture_activation: bool = False,
) -> _Pass:
    """One model forward with the subset's perturbation (or a sketch's) attached."""
    pad = make_padding(data["batch"], data["ptr"])
    d = dict(data)
    pos = d["positions"].detach().requires_grad_(True)
    d["positions"] = pos
    pert = None
    if subset is not None:
        w = subset.targets[0].module.weight
        maker = sketch.perturbation if sketch is not None else Perturbation
        pert = maker(subset, pad, w.dtype, w.device)
    with contextlib.ExitStack() as stack:
        if pert is not None:
            stack.enter_context(attached(subset.targets, pert.fns(), pos.shape[0]))
        seen = stack.enter_context(capture_input(last_readout_linear(model))) if capture_activation else []
        out = model(d, training=False, compute_force=False)
    return _Pass(out["energy"], pos, out, pert, pad, seen[-1] if seen else None)


def energy_backward(p: _Pass, with_leaves: bool, create_graph: bool) -> tuple:
    """ONE autograd.grad of Σ_g E_g -> (forces (N, 3), leaf grads list or [])."""
    leaves = p.pert.leaves if (with_leaves and p.pert is not None) else []
    grads = torch.autograd.grad(p.energy.sum(), [p.positions, *leaves],
                                create_graph=create_graph, allow_unused=True)
    forces = torch.zeros_like(p.positions) if grads[0] is None else -grads[0]
    return forces, list(grads[1:])


def force_rows(forces: Tensor, p: _Pass, vectors: Iterable[Tensor], scale: float = 1.0) -> Tensor:
    """Rows ∂(Σ_g v_g·F_g)/∂Δ[g] · scale for each v (N, 3) -> (G, R, p); one backward each.

    ``forces`` must carry a graph (created with ``create_graph=True``).
    """
    assert p.pert is not None
    rows = []
    for v in vectors:
        g = torch.autograd.grad((forces * v).sum(), p.pert.leaves, retain_graph=True, allow_unused=True)
        rows.append(p.pert.collect(g).detach() * scale)
    return torch.stack(rows, dim=1)


def probe_vectors(mode: str, p: _Pass, forces: Tensor, ids: Tensor, n_probes: int, seed: int,
                  eps: float) -> tuple:
    """(iterable of (N, 3) probe vectors, row scale) for a force mode."""
    pad, dt = p.pad, forces.dtype
    if mode == "direction":
        return [force_direction(forces, pad.batch, pad.n_graphs, eps)], 1.0
    if mode == "probes":
        vs = (rademacher(ids, pad.batch, pad.local, seed, j, dt) for j in range(n_probes))
        return vs, float(n_probes) ** -0.5
    if mode == "exact":
        return (one_hot(pad.local, r, dt) for r in range(3 * pad.n_max)), 1.0
    raise ValueError(f"force mode must be one of {FORCE_MODES}, got {mode!r}")


def _baselines(model: torch.nn.Module, p: _Pass, activation: Optional[str], act_source: str,
               descriptor: bool) -> tuple:
    """(activation (G, d) or None, descriptor (G, d) or None) from the pass's tensors."""
    act = desc = None
    nf = p.out.get("node_feats")
    if activation is not None:
        x = readout_input_invariants(model, p.act_in) if act_source == "readout_input" \
            else last_node_invariants(model, nf)
        act = reduce_per_graph(x.detach(), p.pad.batch, p.pad.n_atoms, activation)
    if descriptor:
        desc = descriptors_from_node_feats(model, nf.detach(), p.pad.batch, p.pad.n_atoms)
    return act, desc


def compute_features(
    model: torch.nn.Module, batch: Any, params: Any = "readouts", *, energy: bool = True,
    force_mode: Optional[str] = None, n_probes: int = 4, seed: int = 0, per_atom: bool = True,
    direction: bool = False, eps: float = 1e-8, activation: Optional[str] = None,
    activation_source: str = "readout_input", descriptor: bool = False, sketch: Any = None,
) -> Features:
    """Companion pass: requested features + energies and forces of ONE forward.

    energy: NTK-E φ_E (G, p); force_mode: None | "direction" | "probes" | "exact" force rows;
    direction: also Jᵀ F̂ (free when force_mode == "direction"); activation: None | "sum" |
    "mean"; descriptor: averaged invariant descriptors; sketch: a ``TensorSketch`` /
    ``GaussianSketch`` replacing p by its dimension. Cost: 1 backward for energies, forces
    and φ_E, plus one double backward per force row (+1 for ``direction`` if not the mode).
    """
    if activation_source not in SOURCES:
        raise ValueError(f"activation_source must be one of {SOURCES}")
    if force_mode is not None and force_mode not in FORCE_MODES:
        raise ValueError(f"force mode must be one of {FORCE_MODES}, got {force_mode!r}")
    want_f = force_mode is not None or direction
    subset = resolve_params(model, params) if (energy or want_f) else None
    with grad_mode():
        data = batch_dict(batch)
        p = forward_pass(model, data, subset, sketch, activation is not None)
        ids = structure_ids(data, p.pad.n_graphs)
        forces, grads = energy_backward(p, energy, create_graph=want_f)
        phi_e = None
        if energy:
            phi_e = p.pert.collect(grads).detach()
            phi_e = phi_e / p.pad.n_atoms.to(phi_e.dtype)[:, None] if per_atom else phi_e
        rows = dirn = None
        if force_mode is not None:
            vs, scale = probe_vectors(force_mode, p, forces, ids, n_probes, seed, eps)
            rows = force_rows(forces, p, vs, scale)
            dirn = rows[:, 0] if force_mode == "direction" else None
        if direction and dirn is None:
            vs, _ = probe_vectors("direction", p, forces, ids, 1, seed, eps)
            dirn = force_rows(forces, p, vs)[:, 0]
        act, desc = _baselines(model, p, activation, activation_source, descriptor)
    return Features(p.energy.detach(), forces.detach(), ids, p.pad.n_atoms, phi_e, rows, dirn, act, desc)


def energy_ntk(model: torch.nn.Module, batch: Any, params: Any = "readouts", per_atom: bool = True,
               sketch: Any = None) -> Tensor:
    """NTK-E features (G, p): ∂(E_g/N_g)/∂θ_S (``per_atom``) or ∂E_g/∂θ_S; one autograd.grad."""
    return compute_features(model, batch, params, energy=True, per_atom=per_atom, sketch=sketch).phi_e


def force_ntk(model: torch.nn.Module, batch: Any, params: Any = "readouts", mode: str = "direction",
              n_probes: int = 4, seed: int = 0, eps: float = 1e-8, sketch: Any = None) -> Tensor:
    """NTK-F rows (G, R, p): R = 1 (direction), k (probes), 3·n_max (exact, zero-padded)."""
    return compute_features(model, batch, params, energy=False, force_mode=mode, n_probes=n_probes,
                            seed=seed, eps=eps, sketch=sketch).force_rows


def activation_features(model: torch.nn.Module, batch: Any, reduce: str = "sum",
                        source: str = "readout_input") -> Tensor:
    """Per-structure sum / mean of last-layer invariant node features (G, d)."""
    return compute_features(model, batch, energy=False, activation=reduce, activation_source=source).activation


def descriptor_features(model: torch.nn.Module, batch: Any) -> Tensor:
    """Per-structure mean of MACE's invariant descriptors over all layers (G, d)."""
    return compute_features(model, batch, energy=False, descriptor=True).descriptor

