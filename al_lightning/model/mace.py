"""Build, load and partially freeze mace-torch models (DESIGN §3 ``model/``).

* :class:`MACEConfig` — architecture hyper-parameters (a tiny CPU default).
* :func:`fit_e0s` — per-element reference energies by least squares, warning when the
  compositions are rank-deficient (mace's own helper silently returns a min-norm fit).
* :func:`build_mace` — ``MACE`` / ``ScaleShiftMACE`` with E0s, avg_num_neighbors and
  scale/shift computed from the labeled graphs.
* :func:`load_foundation` — a user-named model file (the only ``weights_only=False`` load).
* :func:`set_trainable` — freeze / unfreeze parameters by name patterns.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from e3nn import o3
from mace import modules
from mace.tools import AtomicNumberTable

from al_lightning import keys as K


@dataclass
class MACEConfig:
    """MACE architecture (defaults: tiny, CPU friendly). ``scale_shift`` → ScaleShiftMACE."""

    r_max: float = 4.5
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 2
    num_interactions: int = 2
    hidden_irreps: str = "16x0e+16x1o"
    mlp_irreps: str = "16x0e"
    correlation: int = 2
    radial_mlp: List[int] = field(default_factory=lambda: [32, 32])
    scale_shift: bool = True
    interaction: str = "RealAgnosticResidualInteractionBlock"

    def __post_init__(self) -> None:
        if self.r_max <= 0:
            raise ValueError(f"model r_max must be > 0, got {self.r_max}")
        if self.num_interactions < 1:
            raise ValueError(f"model num_interactions must be >= 1, got {self.num_interactions}")
        for name in ("hidden_irreps", "mlp_irreps"):
            try:
                o3.Irreps(getattr(self, name))
            except Exception as exc:
                raise ValueError(f"model {name}={getattr(self, name)!r} is not valid e3nn irreps ({exc})") from None
        if not hasattr(modules.interaction_classes, "get") or self.interaction not in modules.interaction_classes:
            raise ValueError(f"model interaction {self.interaction!r} unknown; one of {sorted(modules.interaction_classes)}")


def z_table_from(elements: Sequence["str | int"]) -> AtomicNumberTable:
    """Sorted AtomicNumberTable from symbols or atomic numbers."""
    zs = set()
    for e in elements:
        if isinstance(e, str):
            if e not in chemical_symbols[1:]:
                raise ValueError(f"unknown element symbol {e!r}")
            zs.add(chemical_symbols.index(e))
        else:
            zs.add(int(e))
    return AtomicNumberTable(sorted(zs))


def fit_e0s(structures: Sequence[Atoms], z_table: AtomicNumberTable) -> np.ndarray:
    """(n_elements,) E0s minimising Σ_s (E_s − Σ_i E0[Z_i])² over labeled structures.

    Warns (UserWarning) when the composition matrix is rank-deficient: the returned
    minimum-norm solution is then not unique; pass explicit E0s in that case.
    """
    if len(structures) == 0:
        raise ValueError("fit_e0s: no labeled structures")
    counts = np.zeros((len(structures), len(z_table)))
    energies = np.zeros(len(structures))
    index = {z: i for i, z in enumerate(z_table.zs)}
    for s, atoms in enumerate(structures):
        for z in atoms.numbers:
            counts[s, index[int(z)]] += 1
        energies[s] = atoms.info[K.REF_ENERGY]
    present = counts.sum(0) > 0
    e0s = np.zeros(len(z_table))
    sol, _, rank, _ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    e0s[present] = sol
    if rank < present.sum():
        names = [chemical_symbols[z] for z, p in zip(z_table.zs, present) if p]
        warnings.warn(
            f"E0 fit is rank-deficient (rank {rank} < {int(present.sum())} elements {names}): "
            "the least-squares E0s are a minimum-norm solution; pass explicit e0s", UserWarning, stacklevel=2)
    return e0s


def graph_statistics(loader, e0s: np.ndarray) -> Dict[str, float]:
    """avg_num_neighbors, mean interaction energy per atom and force RMS from mace's helpers."""
    avg = float(modules.compute_avg_num_neighbors(loader))
    mean, rms = modules.compute_mean_rms_energy_forces(loader, atomic_energies=e0s)
    mean, rms = float(np.ravel(mean)[0]), float(np.ravel(rms)[0])  # TRAPS: 1-element arrays
    return {"avg_num_neighbors": avg, "shift": mean, "scale": rms if rms > 1e-8 else 1.0}


def build_mace(cfg: MACEConfig, z_table: AtomicNumberTable, e0s: np.ndarray, stats: Dict[str, float]) -> torch.nn.Module:
    """A fresh MACE (or ScaleShiftMACE) in the current default dtype."""
    kwargs = dict(
        r_max=cfg.r_max, num_bessel=cfg.num_bessel, num_polynomial_cutoff=cfg.num_polynomial_cutoff,
        max_ell=cfg.max_ell, interaction_cls=modules.interaction_classes[cfg.interaction],
        interaction_cls_first=modules.interaction_classes[cfg.interaction],
        num_interactions=cfg.num_interactions, num_elements=len(z_table),
        hidden_irreps=o3.Irreps(cfg.hidden_irreps), MLP_irreps=o3.Irreps(cfg.mlp_irreps),
        atomic_energies=np.asarray(e0s, dtype=float), avg_num_neighbors=stats["avg_num_neighbors"],
        atomic_numbers=list(z_table.zs), correlation=cfg.correlation, gate=torch.nn.functional.silu,
        radial_MLP=list(cfg.radial_mlp),
    )
    if cfg.scale_shift:
        return modules.ScaleShiftMACE(atomic_inter_scale=stats["scale"], atomic_inter_shift=stats["shift"], **kwargs)
    return modules.MACE(**kwargs)


def load_foundation(path: "str | Path", map_location: str = "cpu") -> torch.nn.Module:
    """Load a MACE model file the user named (pickled module: ``weights_only=False`` here only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"foundation model {path}: file not found")
    try:
        model = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"foundation model {path}: not loadable by torch.load ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers") or not hasattr(model, "r_max"):
        raise ValueError(f"foundation model {path}: not a MACE model (got {type(model).__name__})")
    return model.to(torch.get_default_dtype())


def model_z_table(model: torch.nn.Module) -> AtomicNumberTable:
    return AtomicNumberTable([int(z) for z in model.atomic_numbers])


def model_r_max(model: torch.nn.Module) -> float:
    return float(model.r_max)


def set_trainable(model: torch.nn.Module, patterns: Optional[Sequence[str]]) -> List[str]:
    """Train only parameters whose names match any fnmatch pattern (None/empty: all).

    Returns the trainable names; raises ValueError naming a pattern that matches nothing.
    """
    names = [n for n, _ in model.named_parameters()]
    if not patterns:
        for p in model.parameters():
            p.requires_grad_(True)
        return names
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"trainable pattern {pat!r} matches no parameter (e.g. {names[:3]})")
    chosen = []
    for n, p in model.named_parameters():
        on = any(fnmatch.fnmatchcase(n, pat) for pat in patterns)
        p.requires_grad_(on)
        if on:
            chosen.append(n)
    return chosen


@contextlib.contextmanager
def on_device(net: torch.nn.Module, device):
    """Run a block with ``net`` on ``device``, then put it back where it was
    (Lightning's teardown leaves the module on CPU before ``on_fit_end``)."""
    home = next(net.parameters()).device
    net.to(device)
    try:
        yield net
    finally:
        net.to(home)
