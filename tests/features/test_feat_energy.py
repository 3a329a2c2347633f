"""NTK-E against a per-structure brute-force loop; one backward; model untouched."""

import copy

import pytest
import torch

from al_lightning.features import compute_features, energy_ntk, force_ntk, resolve_params


@pytest.mark.parametrize("preset", ["readouts", "readouts+products", "readouts+last_interaction", "interactions",
                                    "all_linear"])
@pytest.mark.parametrize("per_atom", [True, False])
def test_energy_ntk_matches_brute_force(model, data_list, batch, preset, per_atom, brute):
    sub = resolve_params(model, preset)
    phi = energy_ntk(model, batch, sub, per_atom=per_atom)
    ref = brute.energy(model, data_list, [t.name for t in sub.targets], per_atom)
    assert phi.shape == (len(data_list), sub.p)
    assert ref.abs().max() > 1e-3  # not trivially zero
    assert (phi - ref).abs().max() < 1e-10


def test_one_autograd_call_per_batch(model, batch, monkeypatch):
    calls = []
    real = torch.autograd.grad

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    energy_ntk(model, batch, "readouts+products")
    assert len(calls) == 1
    calls.clear()
    compute_features(model, batch, "readouts", energy=True, force_mode="direction")
    assert len(calls) == 2  # energy+forces+φ_E, then the direction row
    calls.clear()
    force_ntk(model, batch, "readouts", mode="probes", n_probes=3)
    assert len(calls) == 4


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def test_model_untouched(model, batch, brute, data_list):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = model(brute.to_batch(data_list), compute_force=True)
    compute_features(model, batch, "readouts+products", force_mode="probes", n_probes=2,
                     activation="sum", descriptor=True)
    after = model(brute.to_batch(data_list), compute_force=True)
    for key in ("energy", "forces", "node_feats"):
        assert torch.equal(before[key], after[key])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())
    assert _no_hooks(model)
    assert not batch["positions"].requires_grad  # caller's batch not mutated


def test_companion_outputs_equal_plain_forward(model, batch, brute, data_list):
    ref = model(brute.to_batch(data_list), compute_force=True)
    f = compute_features(model, batch, "readouts", force_mode="direction")
    assert torch.allclose(f.energy, ref["energy"], rtol=0, atol=1e-13)
    assert torch.allclose(f.forces, ref["forces"], rtol=0, atol=1e-13)
    assert f.ids.tolist() == list(range(100, 108))


def test_hooks_removed_on_error(model, batch):
    bad = dict(batch)
    bad["positions"] = bad["positions"][:-1]  # inconsistent batch: forward fails
    with pytest.raises(Exception):
        energy_ntk(model, bad)
    assert _no_hooks(model)


def test_float32(model, data_list, batch):
    m32 = copy.deepcopy(model).float()
    b32 = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in batch.items()}
    phi = energy_ntk(m32, b32, "readouts+products")
    rows = force_ntk(m32, b32, "readouts", mode="direction")
    assert phi.dtype == torch.float32 and rows.dtype == torch.float32
    ref = energy_ntk(model, batch, "readouts+products")
    ref_rows = force_ntk(model, batch, "readouts", mode="direction")
    assert torch.allclose(phi.double(), ref, rtol=1e-3, atol=1e-5 * ref.abs().max())
    assert torch.allclose(rows.double(), ref_rows, rtol=1e-3, atol=1e-4 * ref_rows.abs().max())
