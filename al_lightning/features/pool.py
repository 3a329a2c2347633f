"""The pool-pass entry: ``pool_step(model, batch, spec, w_energy, w_forces) -> PoolRows``.

One call per batch, ``predict_step``-style, returning everything the distributed pool pass
needs (docs/design.md §5–6) from ONE forward:

    PoolRows(ids: LongTensor (G,)          global structure ids, from batch["structure_id"]
                                            (arange(G) when absent),
             rows: Tensor (G, R, p)        feature rows whose Σ_rows φᵀMφ is the PV,
             lcmd: Tensor (G, d)           one vector per structure for LCMD,
             energy: Tensor (G,), forces: Tensor (N, 3)   predictions of the same forward)

Rows by ``spec.kind`` (w_E, w_F = the training loss's energy and force weights, applied the
same way on the training and pool sides whatever the row type, docs/design.md §4):

- ``ntk_e``: [√w_E φ_E] (R = 1); lcmd = √w_E φ_E
- ``ntk_f``: √w_F · force rows (R = 1 direction, k probes, 3·n_max exact); lcmd = √w_F φ_F
- ``ntk_ef``: [√w_E φ_E ; √w_F force rows] (R = 1 + rows); lcmd = [√w_E φ_E, √w_F φ_F] (2p)
- ``activation`` / ``descriptor``: the baseline vector as one row; lcmd = the same vector

φ_F in the LCMD vector is the force-direction row Jᵀ F̂ (free with ``force_mode="direction"``,
one extra double backward with probes or exact rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from al_lightning.features.ntk import FORCE_MODES, compute_features

FEATURE_KINDS = ("ntk_e", "ntk_f", "ntk_ef", "activation", "descriptor")


@dataclass(frozen=True)
class FeatureSpec:
    """What a pool (or training-set) pass computes. ``params``: preset / patterns / ParamSubset;
    ``sketch``: None, a ``TensorSketch`` or a ``GaussianSketch``."""

    kind: str = "ntk_ef"
    params: Any = "readouts"
    force_mode: str = "direction"
    n_probes: int = 4
    seed: int = 0
    per_atom: bool = True
    eps: float = 1e-8
    activation_reduce: str = "sum"
    sketch: Any = None

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.force_mode not in FORCE_MODES:
            raise ValueError(f"force_mode must be one of {FORCE_MODES}, got {self.force_mode!r}")


class PoolRows(NamedTuple):
    ids: Tensor
    rows: Tensor
    lcmd: Tensor
    energy: Tensor
    forces: Tensor


def ef_rows(phi_e: Optional[Tensor], f_rows: Optional[Tensor], w_energy: float = 1.0,
            w_forces: float = 1.0) -> Tensor:
    """Stack [√w_E φ_E (G, p) ; √w_F f_rows (G, R, p)] -> (G, R', p) (either may be None)."""
    parts = []
    if phi_e is not None:
        parts.append(phi_e[:, None, :] * w_energy ** 0.5)
    if f_rows is not None:
        parts.append(f_rows * w_forces ** 0.5)
    if not parts:
        raise ValueError("need energy or force rows")
    return torch.cat(parts, dim=1)


def lcmd_vector(phi_e: Optional[Tensor], phi_f: Optional[Tensor], w_energy: float = 1.0,
                w_forces: float = 1.0) -> Tensor:
    """[√w_E φ_E, √w_F φ_F] (G, 2p) (or the one present) for LCMD."""
    parts = [x * w ** 0.5 for x, w in ((phi_e, w_energy), (phi_f, w_forces)) if x is not None]
    if not parts:
        raise ValueError("need φ_E or φ_F")
    return torch.cat(parts, dim=1)


def pool_step(model: torch.nn.Module, batch: Any, spec: FeatureSpec, w_energy: float = 1.0,
              w_forces: float = 1.0) -> PoolRows:
    """Feature rows, LCMD vectors, ids, energies and forces of one batch (one forward)."""
    k = spec.kind
    want_e, want_f = k in ("ntk_e", "ntk_ef"), k in ("ntk_f", "ntk_ef")
    f = compute_features(
        model, batch, spec.params, energy=want_e, force_mode=spec.force_mode if want_f else None,
        n_probes=spec.n_probes, seed=spec.seed, per_atom=spec.per_atom, direction=want_f,
        eps=spec.eps, activation=spec.activation_reduce if k == "activation" else None,
        descriptor=k == "descriptor", sketch=spec.sketch,
    )
    if k in ("activation", "descriptor"):
        vec = f.activation if k == "activation" else f.descriptor
        return PoolRows(f.ids, vec[:, None, :], vec, f.energy, f.forces)
    rows = ef_rows(f.phi_e, f.force_rows, w_energy, w_forces)
    lcmd = lcmd_vector(f.phi_e, f.direction, w_energy, w_forces)
    return PoolRows(f.ids, rows, lcmd, f.energy, f.forces)
