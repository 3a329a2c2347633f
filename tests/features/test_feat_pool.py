"""Feature maps: ids, √w-scaled rows, LCMD vectors, energies/forces of the same forward."""

import pytest
import torch

from al_lightning.features import (
    ActivationFeatures,
    DescriptorFeatures,
    NTKEnergy,
    NTKEnergyForce,
    NTKForce,
    build_feature_map,
    compute_features,
    ef_rows,
    lcmd_vector,
)


def test_ntk_ef_direction(model, batch, brute, data_list):
    we, wf = 4.0, 9.0
    out = NTKEnergyForce(params="readouts", sketch_dim=None).rows(model, batch, w_energy=we, w_forces=wf)
    f = compute_features(model, batch, "readouts", force_mode="direction")
    assert out.ids.tolist() == list(range(100, 108)) and out.ids.dtype == torch.long
    assert out.rows.shape == (8, 2, 152) and out.lcmd.shape == (8, 304)
    assert torch.allclose(out.rows[:, 0], 2.0 * f.phi_e, rtol=0, atol=1e-15)
    assert torch.allclose(out.rows[:, 1], 3.0 * f.direction, rtol=0, atol=1e-15)
    assert torch.allclose(out.lcmd, torch.cat([2.0 * f.phi_e, 3.0 * f.direction], 1), rtol=0, atol=1e-15)
    ref = model(brute.to_batch(data_list), compute_force=True)
    assert torch.allclose(out.energy, ref["energy"], rtol=0, atol=1e-13)
    assert torch.allclose(out.forces, ref["forces"], rtol=0, atol=1e-13)


def test_probe_rows_and_fallback_ids(model, batch):
    b = {k: v for k, v in batch.items() if k != "structure_id"}
    ntk_f = NTKForce(params="readouts", force_mode="probes", n_probes=3, seed=2, sketch_dim=None)
    out = ntk_f.rows(model, b, w_forces=4.0)
    assert out.ids.tolist() == list(range(8))
    ref = compute_features(model, b, energy=False, force_mode="probes", n_probes=3, seed=2, direction=True)
    assert torch.allclose(out.rows, 2.0 * ref.force_rows, rtol=0, atol=1e-15)
    assert torch.allclose(out.lcmd, 2.0 * ref.direction, rtol=0, atol=1e-15)


def test_training_side_uses_the_training_probes(model, batch):
    ntk = NTKEnergyForce(params="readouts", force_mode="direction", train_force_mode="probes", train_probes=5,
                         sketch_dim=None).prepare(model)
    assert ntk.rows(model, batch).rows.shape == (8, 2, 152)
    assert ntk.training().rows(model, batch).rows.shape == (8, 6, 152)


@pytest.mark.parametrize("name,dim", [("ntk_e", 152), ("activation", 16), ("descriptor", 16)])
def test_other_maps(model, batch, name, dim):
    features = build_feature_map({"class_path": name, "init_args": {"params": "readouts", "sketch_dim": None}}
                                 if name == "ntk_e" else name)
    assert type(features) is {"ntk_e": NTKEnergy, "activation": ActivationFeatures,
                              "descriptor": DescriptorFeatures}[name]
    out = features.rows(model, batch)
    assert out.rows.shape == (8, 1, dim) and out.lcmd.shape == (8, dim)
    assert torch.equal(out.rows[:, 0], out.lcmd)


def test_sketched_map_prepared_or_not(model, batch):
    ntk = NTKEnergyForce(params="readouts+products", sketch_dim=32)
    out = ntk.rows(model, batch)
    assert out.rows.shape == (8, 2, 32) and out.lcmd.shape == (8, 64)
    assert torch.equal(ntk.prepare(model).rows(model, batch).rows, out.rows)  # the same seeded sketch


def test_helpers_and_validation():
    e, f = torch.ones(2, 3), torch.ones(2, 4, 3)
    assert ef_rows(e, f, 4.0, 1.0).shape == (2, 5, 3) and ef_rows(e, f, 4.0)[0, 0, 0] == 2.0
    assert lcmd_vector(e, None, 9.0).tolist() == [[3.0] * 3] * 2
    with pytest.raises(ValueError, match="features 'ntk_x': expected an import path"):
        build_feature_map("ntk_x")
    with pytest.raises(ValueError, match="force_mode must be one of"):
        NTKEnergyForce(force_mode="hutch")
    with pytest.raises(ValueError, match="is not a FeatureMap class"):
        build_feature_map("al_lightning.acquisition.TopB")


def test_mace_batch_object_and_inference_mode(model, data_list, batch):
    """A mace ``Batch`` (not a dict) built under inference_mode, as Lightning's predict does."""
    from mace.tools.torch_geometric.batch import Batch

    ntk = NTKEnergyForce(params="readouts", sketch_dim=None)
    ref = ntk.rows(model, batch)
    with torch.inference_mode():
        b = Batch.from_data_list(list(data_list))
        b.structure_id = torch.arange(100, 108)
        out = ntk.rows(model, b)
    assert out.ids.tolist() == list(range(100, 108))
    assert torch.allclose(out.rows, ref.rows, rtol=0, atol=1e-14)
    with torch.no_grad():
        assert torch.allclose(ntk.rows(model, batch).rows, ref.rows, rtol=0, atol=1e-14)
