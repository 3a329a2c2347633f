"""Activation and descriptor baselines."""

import torch

from al_lightning.features import activation_features, compute_features, descriptor_features, energy_ntk


def test_activation_sum_is_last_readout_ntk_block(model, batch):
    """Σ_atoms of the last readout linear's inputs ∝ extensive NTK-E block of that linear."""
    act = activation_features(model, batch, reduce="sum")  # (G, 16): MLP hidden activations
    block = energy_ntk(model, batch, ["readouts.1.linear_2.weight"], per_atom=False)  # (G, 16)
    assert act.shape == block.shape == (8, 16)
    const = (block * act).sum() / (act * act).sum()
    # constant = ScaleShift scale (1.3) × e3nn path weight 1/√16
    assert abs(const.item() - 1.3 / 4) < 1e-12
    assert (block - const * act).abs().max() < 1e-12 * act.abs().max()


def test_activation_mean_and_node_feats_source(model, batch):
    s = activation_features(model, batch, reduce="sum")
    m = activation_features(model, batch, reduce="mean")
    n = (batch["ptr"][1:] - batch["ptr"][:-1]).double()
    assert torch.allclose(m, s / n[:, None], rtol=1e-14, atol=0)
    nf = activation_features(model, batch, reduce="sum", source="node_feats")
    out = model(dict(batch), compute_force=False)
    last = out["node_feats"][:, -8:]  # last product output: 8x0e
    ref = torch.zeros(8, 8).index_add_(0, batch["batch"], last.detach())
    assert torch.allclose(nf, ref, rtol=0, atol=1e-13)


def test_descriptor_is_mean_of_invariant_channels(model, batch):
    d = descriptor_features(model, batch)
    nf = model(dict(batch), compute_force=False)["node_feats"].detach()
    cols = torch.cat([torch.arange(0, 8), torch.arange(32, 40)])  # 8x0e+8x1o | 8x0e
    n = (batch["ptr"][1:] - batch["ptr"][:-1]).double()
    ref = torch.zeros(8, 16).index_add_(0, batch["batch"], nf[:, cols]) / n[:, None]
    assert d.shape == (8, 16)
    assert torch.allclose(d, ref, rtol=0, atol=1e-13)


def test_baselines_in_companion_pass(model, batch):
    f = compute_features(model, batch, energy=True, activation="mean", descriptor=True)
    assert f.phi_e.shape == (8, 152) and f.activation.shape == (8, 16) and f.descriptor.shape == (8, 16)
