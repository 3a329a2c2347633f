"""Parameter subsets: presets, patterns, p per layer, unsupported parameters."""

import pytest

from al_lightning.features import resolve_params


def test_default_preset_is_readouts(model):
    sub = resolve_params(model)
    assert sub.report() == {
        "readouts.0.linear.weight": 8,
        "readouts.1.linear_1.weight": 128,
        "readouts.1.linear_2.weight": 16,
    }
    assert sub.p == 152
    offsets = [t.offset for t in sub.targets]
    assert offsets == [0, 8, 136]


def test_products_preset_adds_product_linears_with_blocks(model):
    sub = resolve_params(model, "readouts+products")
    rep = sub.report()
    assert rep["products.0.linear.weight"] == 128 and rep["products.1.linear.weight"] == 64
    assert sub.p == 152 + 192
    prod0 = next(t for t in sub.targets if t.name == "products.0.linear.weight")
    assert [(b.mul_in, b.mul_out, b.ir_dim) for b in prod0.blocks] == [(8, 8, 1), (8, 8, 3)]


def test_last_interaction_preset_and_patterns(model):
    sub = resolve_params(model, "readouts+last_interaction")
    assert {"interactions.1.linear_up.weight", "interactions.1.linear.weight",
            "products.1.linear.weight"} <= set(sub.report())
    assert resolve_params(model, ["readouts.1.*"]).p == 144


def test_non_linear_parameters_rejected_or_skipped(model):
    with pytest.raises(ValueError, match="o3.Linear"):
        resolve_params(model, ["interactions.0.*"])
    sub = resolve_params(model, ["interactions.0.*"], strict=False)
    assert "interactions.0.skip_tp.weight" in sub.skipped
    assert set(sub.report()) == {"interactions.0.linear_up.weight", "interactions.0.linear.weight"}
    with pytest.raises(ValueError, match="no o3.Linear"):
        resolve_params(model, ["nothing.*"])
