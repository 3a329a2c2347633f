"""NTK-F rows against per-structure brute-force force Jacobians."""

import torch

from al_lightning.features import compute_features, force_ntk
from al_lightning.features.perturb import make_padding
from al_lightning.features.probes import force_direction, rademacher


def _n(d):
    return d.positions.shape[0]


def test_exact_rows_equal_force_jacobian(model, data_list, exact_J, readout_names, brute):
    n_max = max(_n(d) for d in data_list)
    assert exact_J.shape == (len(data_list), 3 * n_max, 152)
    for g, d in enumerate(data_list):
        ref = brute.jacobian(model, d, readout_names)
        assert (exact_J[g, : 3 * _n(d)] - ref).abs().max() < 1e-10
        assert ref.abs().max() > 1e-4
        assert torch.all(exact_J[g, 3 * _n(d):] == 0)  # zero padding


def test_exact_rows_product_linears(model, data_list, batch, brute):
    names = ["products.0.linear.weight", "products.1.linear.weight"]
    J = force_ntk(model, batch, names, mode="exact")
    for g in (2, 4):  # a 9-atom slab and the 13-atom slab
        ref = brute.jacobian(model, data_list[g], names)
        assert (J[g, : 3 * _n(data_list[g])] - ref).abs().max() < 1e-10


def test_exact_rows_every_linear_layer(model, data_list, batch, brute):
    """The ``all_linear`` preset (node embedding, interaction and product linears, readouts)."""
    from al_lightning.features import resolve_params

    sub = resolve_params(model, "all_linear")
    names = [t.name for t in sub.targets]
    assert "node_embedding.linear.weight" in names and "interactions.0.linear_up.weight" in names
    J = force_ntk(model, batch, sub, mode="exact")
    for g in (2, 4):
        ref = brute.jacobian(model, data_list[g], names)
        assert (J[g, : 3 * _n(data_list[g])] - ref).abs().max() < 1e-10 * max(1.0, ref.abs().max().item())


def test_translation_invariance_rows_sum_to_zero(data_list, exact_J):
    for g, d in enumerate(data_list):
        J = exact_J[g, : 3 * _n(d)].reshape(_n(d), 3, -1)
        assert J.sum(0).abs().max() < 1e-12 * max(1.0, J.abs().max().item()) + 1e-13


def test_probe_rows_equal_jt_v(model, batch, exact_J):
    k, seed = 3, 5
    rows = force_ntk(model, batch, "readouts", mode="probes", n_probes=k, seed=seed)
    pad = make_padding(batch["batch"], batch["ptr"])
    for j in range(k):
        v = rademacher(batch["structure_id"], pad.batch, pad.local, seed, j)  # (N, 3)
        vp = torch.zeros(pad.n_graphs * pad.n_max, 3).index_copy(0, pad.index, v)
        vp = vp.reshape(pad.n_graphs, 3 * pad.n_max)
        ref = torch.einsum("gr,grp->gp", vp, exact_J) / k**0.5
        assert (rows[:, j] - ref).abs().max() < 1e-10
    assert set(torch.unique(v).tolist()) == {-1.0, 1.0}


def test_direction_row(model, batch, exact_J):
    f = compute_features(model, batch, "readouts", energy=False, force_mode="direction")
    pad = make_padding(batch["batch"], batch["ptr"])
    fhat = force_direction(f.forces, pad.batch, pad.n_graphs)
    fp = torch.zeros(pad.n_graphs * pad.n_max, 3).index_copy(0, pad.index, fhat)
    ref = torch.einsum("gr,grp->gp", fp.reshape(pad.n_graphs, -1), exact_J)
    assert f.force_rows.shape == (8, 1, 152)
    assert (f.force_rows[:, 0] - ref).abs().max() < 1e-10
    assert torch.equal(f.direction, f.force_rows[:, 0])


def test_probes_seeded_by_structure_id(model, data_list, brute):
    both = force_ntk(model, brute.to_batch(data_list[2:5], ids=[7, 8, 9]), mode="probes", n_probes=2)
    alone = force_ntk(model, brute.to_batch([data_list[3]], ids=[8]), mode="probes", n_probes=2)
    other = force_ntk(model, brute.to_batch([data_list[3]], ids=[11]), mode="probes", n_probes=2)
    assert (both[1] - alone[0]).abs().max() < 1e-12
    assert (other[0] - alone[0]).abs().max() > 1e-6
    reseeded = force_ntk(model, brute.to_batch([data_list[3]], ids=[8]), mode="probes", n_probes=2, seed=1)
    assert (reseeded[0] - alone[0]).abs().max() > 1e-6


def test_probe_trace_unbiased(model, batch, exact_J):
    exact = (exact_J**2).sum((1, 2))  # tr(J Jᵀ) per structure
    k, n_seeds = 2, 24
    est = torch.stack([
        (force_ntk(model, batch, mode="probes", n_probes=k, seed=s) ** 2).sum((1, 2))
        for s in range(n_seeds)
    ])  # (seeds, G)
    mean, se = est.mean(0), est.std(0) / n_seeds**0.5
    assert torch.all(se > 0)
    assert torch.all((mean - exact).abs() < 3 * se), ((mean - exact) / se)
