"""Sketches: exact implicit projection, unbiased inner products, no full gradient."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from al_lightning.features import GaussianSketch, TensorSketch, compute_features, energy_ntk, resolve_params
from al_lightning.features.params import linear_blocks
from al_lightning.features.perturb import make_padding
from al_lightning.features.sketch import sketch_delta


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def explicit_matrix(sk: TensorSketch, subset) -> torch.Tensor:
    """The implicit S (d, p) made explicit from the sketch's own factors (small p only)."""
    cols = []
    for t in subset.targets:
        for b, (p, q) in zip(t.blocks, sk.factors(t, torch.float64, torch.device("cpu"))):
            cols.append(torch.einsum("ul,wl->luw", p, q).reshape(sk.dim, b.numel))
    return torch.cat(cols, dim=1)


PRESET = "readouts+products"
PRESETS = ["readouts+products", "interactions", "all_linear"]


@pytest.mark.parametrize("mode", ["implicit", "explicit", "auto"])
@pytest.mark.parametrize("preset", PRESETS)
def test_tensor_sketch_is_implicit_projection(model, batch, preset, mode):
    """Sketched energy and force rows = S · (brute-force-exact rows), for every preset and mode."""
    sk = TensorSketch(64, seed=3, mode=mode)
    sub = resolve_params(model, preset)
    s = explicit_matrix(sk, sub)  # (64, p)
    f_exact = compute_features(model, batch, sub, force_mode="probes", n_probes=2)
    f_sk = compute_features(model, batch, sub, force_mode="probes", n_probes=2, sketch=sk)
    assert f_sk.phi_e.shape == (8, 64) and f_sk.force_rows.shape == (8, 2, 64)
    scale = f_exact.phi_e.abs().max() * s.abs().max() * sub.p ** 0.5
    assert (f_sk.phi_e - f_exact.phi_e @ s.T).abs().max() < 1e-8 * scale
    assert (f_sk.force_rows - f_exact.force_rows @ s.T).abs().max() < 1e-8 * scale
    again = energy_ntk(model, batch, sub, sketch=TensorSketch(64, seed=3, mode=mode))
    assert torch.equal(again, energy_ntk(model, batch, sub, sketch=sk))  # seeded, cache-independent
    assert (energy_ntk(model, batch, sub, sketch=TensorSketch(64, seed=4, mode=mode)) - again).abs().max() > 1e-6


@pytest.mark.parametrize("kind", ["tensor", "gaussian"])
def test_sketched_inner_products_unbiased(model, batch, kind):
    d = 3000
    sub = resolve_params(model, PRESET)
    phi = energy_ntk(model, batch, sub)
    sk = TensorSketch(d, seed=1) if kind == "tensor" else GaussianSketch(d, seed=1)
    s = energy_ntk(model, batch, sub, sketch=sk)  # (G, d); components iid given the seed
    for g, h in [(0, 0), (2, 4), (3, 6), (4, 4)]:
        z = d * s[g] * s[h]  # d unbiased one-component estimates of ⟨φ_g, φ_h⟩
        exact = phi[g] @ phi[h]
        se = z.std() / d**0.5
        assert abs(z.mean() - exact) < 3 * se, (g, h, ((z.mean() - exact) / se).item())


@pytest.mark.parametrize("preset", PRESETS)
def test_sketch_never_forms_the_full_gradient(model, batch7, preset):
    """No (G, |W|) or (G, mul_in, mul_out) tensor; G = 7 graphs (with 8, MACE's own 8-channel
    weight views look like gradients)."""
    batch = batch7
    sub = resolve_params(model, preset)
    forbidden = {(7, t.numel) for t in sub.targets if t.numel > 16} | {(7, sub.p)}
    forbidden |= {(7, b.mul_in, b.mul_out) for t in sub.targets for b in t.blocks if b.numel > 16}
    with ShapeRecorder() as exact_rec:
        energy_ntk(model, batch, sub)
    assert forbidden & set(exact_rec.shapes)  # the recorder does see the exact gradients
    with ShapeRecorder() as rec:
        energy_ntk(model, batch, sub, sketch=TensorSketch(24, seed=0, mode="implicit"))
    assert not forbidden & set(rec.shapes)


def test_sketch_delta_memory_cap():
    """A wide block (64×64, G=32): no tensor as large as the per-graph gradients (G·p)."""
    import al_lightning  # noqa: F401
    from e3nn import o3

    from al_lightning.features.params import LinearTarget

    lin = o3.Linear("64x0e", "64x0e").double()
    tgt = LinearTarget("w", lin, linear_blocks(lin), 4096, 0, 64, ((0, 64),))
    g, per = 32, 2
    batch = torch.arange(g).repeat_interleave(per)
    pad = make_padding(batch, torch.arange(0, g * per + 1, per))
    x = torch.randn(g * per, 64, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(g, 16, dtype=torch.float64, requires_grad=True)
    sk = TensorSketch(16)
    with ShapeRecorder() as rec:
        y = sketch_delta(x, c.index_select(0, pad.batch), tgt, sk.factors(tgt, torch.float64, x.device))
        (grad_c,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), c)
    biggest = max(torch.Size(s).numel() for s in rec.shapes)
    assert grad_c.shape == (32, 16)
    assert biggest * 8 <= g * 4096, biggest


def test_auto_mode_chooses_by_cost_and_respects_the_memory_cap(model, batch):
    from al_lightning.features.perturb import make_padding

    sub = resolve_params(model, "all_linear")
    pad = make_padding(batch["batch"], batch["ptr"])
    wide, narrow = TensorSketch(4096, mode="auto"), TensorSketch(2, mode="auto")
    assert all(wide.explicit(t, pad) for t in sub.targets)  # d ≫ widths: exact gradients are cheaper
    assert not any(narrow.explicit(t, pad) for t in sub.targets if t.numel > 16)
    capped = TensorSketch(4096, mode="auto", max_explicit=8 * 32)
    assert [capped.explicit(t, pad) for t in sub.targets] == [8 * t.numel <= 8 * 32 for t in sub.targets]
    with pytest.raises(ValueError, match="sketch mode must be one of"):
        TensorSketch(8, mode="lazy")
