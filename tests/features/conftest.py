"""Fixtures for the NTK feature tests: a tiny float64 ScaleShiftMACE and ~8 mixed-size
periodic Cu/Pt structures with adsorbates (all seeded).

Everything here is float64: the default dtype is set *before* any data or model is built
(TRAPS: AtomicData.from_config casts to the default dtype).
"""

from __future__ import annotations

import contextlib
import types
from typing import Dict, Iterator, List, Sequence

import numpy as np
import pytest
import torch

import al_lightning  # noqa: F401  (imports mace before e3nn.o3)

R_MAX = 4.0
ZS = [1, 8, 29, 78]


def make_structures(seed: int = 0) -> List["ase.Atoms"]:  # noqa: F821
    """Eight rattled periodic structures with 4..13 atoms: slabs with adsorbates and bulk."""
    from ase import Atoms
    from ase.build import add_adsorbate, bulk, fcc100, fcc111

    rng = np.random.default_rng(seed)
    out = []
    out.append(bulk("Cu", "fcc", a=3.6, cubic=True))  # 4 atoms
    out.append(bulk("Pt", "fcc", a=3.92, cubic=True))  # 4
    s = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(s, "O", 1.5, "fcc")
    out.append(s)  # 9
    s = fcc100("Pt", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(s, "H", 1.2, "hollow")
    out.append(s)  # 9
    s = fcc111("Pt", size=(2, 2, 3), vacuum=5.0)
    add_adsorbate(s, "O", 1.6, "ontop")
    out.append(s)  # 13
    s = bulk("Cu", "fcc", a=3.6, cubic=True)
    s[0].symbol = "Pt"
    out.append(s)  # 4, alloy
    s = fcc100("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(s, "O", 1.4, "hollow")
    add_adsorbate(s, "H", 2.4, "hollow")
    out.append(s)  # 10
    out.append(Atoms("CuO", positions=[[0, 0, 0], [1.9, 0.1, 0.2]], cell=[3.8, 3.8, 3.8], pbc=True))
    for a in out:
        a.positions += rng.normal(scale=0.08, size=a.positions.shape)
    return out


def to_data(atoms_list: Sequence, r_max: float = R_MAX) -> list:
    """ase.Atoms -> mace AtomicData (in the current default dtype)."""
    from mace import data as mdata
    from mace.tools import AtomicNumberTable

    table = AtomicNumberTable(ZS)
    return [
        mdata.AtomicData.from_config(mdata.config_from_atoms(a), z_table=table, cutoff=r_max)
        for a in atoms_list
    ]


def to_batch(data_list: Sequence, ids: Sequence[int] | None = None) -> Dict[str, torch.Tensor]:
    """A mace batch dict; attaches ``structure_id`` when ``ids`` is given."""
    from mace.tools.torch_geometric.batch import Batch

    d = Batch.from_data_list(list(data_list)).to_dict()
    if ids is not None:
        d["structure_id"] = torch.as_tensor(list(ids), dtype=torch.long)
    return d


def build_model(hidden: str = "8x0e+8x1o", mlp: str = "16x0e", seed: int = 0) -> torch.nn.Module:
    """Tiny ScaleShiftMACE: 2 interactions, max_ell 2, correlation 2, MLP last readout."""
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    model = modules.ScaleShiftMACE(
        r_max=R_MAX,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(ZS),
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps(mlp),
        atomic_energies=np.array([-1.0, -2.0, -3.0, -4.0]),
        avg_num_neighbors=20.0,
        atomic_numbers=ZS,
        correlation=2,
        gate=torch.nn.functional.silu,
        radial_MLP=[16, 16],
        atomic_inter_scale=1.3,
        atomic_inter_shift=0.1,
    )
    # spread the readout weights a little so no block is accidentally tiny
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (restored afterwards, so other test dirs are unaffected)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    with default_dtype(torch.float64):
        yield


@pytest.fixture(scope="session")
def structures() -> list:
    return make_structures(0)


@pytest.fixture(scope="session")
def data_list(structures) -> list:
    with default_dtype(torch.float64):
        return to_data(structures)


@pytest.fixture(scope="session")
def model() -> torch.nn.Module:
    with default_dtype(torch.float64):
        return build_model()


@pytest.fixture()
def batch(data_list) -> Dict[str, torch.Tensor]:
    return to_batch(data_list, ids=range(100, 100 + len(data_list)))


@pytest.fixture()
def batch7(data_list) -> Dict[str, torch.Tensor]:
    """Seven graphs: a count no layer width of the tiny model has (shape-based memory checks)."""
    return to_batch(data_list[:7], ids=range(7))


# ---------------------------------------------------------------- brute-force references
def param_list(model: torch.nn.Module, names: Sequence[str]) -> List[torch.Tensor]:
    params = dict(model.named_parameters())
    return [params[n] for n in names]


def brute_energy_grads(model, data_list, names, per_atom: bool = True) -> torch.Tensor:
    """Per-structure loop: ∂(E/N)/∂θ (or ∂E/∂θ) flattened in e3nn layout -> (G, p)."""
    rows = []
    for d in data_list:
        out = model(to_batch([d]), compute_force=False)
        e = out["energy"].sum() / (d.positions.shape[0] if per_atom else 1)
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(e, param_list(model, names))]))
    return torch.stack(rows)


def brute_force_jacobian(model, data, names) -> torch.Tensor:
    """Per-structure force Jacobian J = ∂F/∂θ (3N, p), row 3i+c, by one backward per row."""
    out = model(to_batch([data]), training=True, compute_force=True)
    f, ps = out["forces"], param_list(model, names)
    rows = []
    for i in range(f.shape[0]):
        for c in range(3):
            g = torch.autograd.grad(f[i, c], ps, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if x is None else x).flatten() for x, p in zip(g, ps)]))
    return torch.stack(rows)


@pytest.fixture(scope="session")
def readout_names(model) -> List[str]:
    from al_lightning.features import resolve_params

    return [t.name for t in resolve_params(model, "readouts").targets]


@pytest.fixture(scope="session")
def exact_J(model, data_list) -> torch.Tensor:
    """force_ntk exact rows of the standard batch (readouts), computed once: (G, 3 n_max, p)."""
    from al_lightning.features import force_ntk

    with default_dtype(torch.float64):
        return force_ntk(model, to_batch(data_list), "readouts", mode="exact")


@pytest.fixture(scope="session")
def brute() -> types.SimpleNamespace:
    """Reference helpers for the tests (conftest modules are not imported by name)."""
    return types.SimpleNamespace(energy=brute_energy_grads, jacobian=brute_force_jacobian,
                                 to_data=to_data, to_batch=to_batch, build_model=build_model,
                                 default_dtype=default_dtype, structures=make_structures)
