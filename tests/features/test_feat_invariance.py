"""Rotation and permutation invariance of JᵀJ, tr(J M Jᵀ) and the direction-row kernel."""

import numpy as np
import pytest
import torch

from al_lightning.features import compute_features, force_ntk

SMALL = [0, 1, 2, 5, 7]  # 4, 4, 9, 4, 2 atoms: keeps the exact rows cheap


def _random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _rotated(atoms, rot):
    a = atoms.copy()
    a.set_cell(a.cell.array @ rot.T, scale_atoms=False)
    a.positions = a.positions @ rot.T
    return a


def _permuted(atoms, seed):
    return atoms[np.random.default_rng(seed).permutation(len(atoms))]


def _quantities(model, atoms_list, brute, metric):
    batch = brute.to_batch(brute.to_data(atoms_list))
    J = force_ntk(model, batch, "readouts", mode="exact")  # (G, R, p)
    f = compute_features(model, batch, "readouts", force_mode="direction")
    jtj = torch.einsum("grp,grq->gpq", J, J)
    trace = torch.einsum("grp,pq,grq->g", J, metric, J)
    dirk = f.force_rows[:, 0] @ f.force_rows[:, 0].T
    return jtj, trace, dirk, f.phi_e, f.energy


@pytest.fixture(scope="module")
def reference(model, structures, brute):
    with brute.default_dtype(torch.float64):
        a = torch.randn(152, 152, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        metric = a @ a.T / 152 + torch.eye(152)
        atoms = [structures[i] for i in SMALL]
        return atoms, metric, _quantities(model, atoms, brute, metric)


@pytest.mark.parametrize("transform", ["rotation", "permutation"])
def test_invariance(model, brute, reference, transform):
    atoms, metric, ref = reference
    if transform == "rotation":
        moved = [_rotated(a, _random_rotation(i)) for i, a in enumerate(atoms)]
    else:
        moved = [_permuted(a, i) for i, a in enumerate(atoms)]
    out = _quantities(model, moved, brute, metric)
    for name, x, y in zip(("JtJ", "trace", "direction kernel", "phi_E", "energy"), out, ref):
        scale = y.abs().max()
        assert scale > 0
        assert (x - y).abs().max() < 1e-9 * scale, name


def test_single_probe_rows_not_invariant(model, structures, brute):
    """Sanity check of the test itself: single Rademacher rows change under rotation."""
    atoms = [structures[2]]
    b0 = brute.to_batch(brute.to_data(atoms))
    b1 = brute.to_batch(brute.to_data([_rotated(atoms[0], _random_rotation(3))]))
    r0 = force_ntk(model, b0, mode="probes", n_probes=1)
    r1 = force_ntk(model, b1, mode="probes", n_probes=1)
    assert (r0 - r1).abs().max() > 1e-6
