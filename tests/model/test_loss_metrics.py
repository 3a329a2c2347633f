"""Loss and metrics against hand computation on a 2-structure batch."""

import math

import pytest
import torch

from al_lightning.model.loss import energy_force_loss
from al_lightning.model.metrics import SplitMetrics


@pytest.fixture
def batch():
    # graph 0: 2 atoms (atom 1 fixed); graph 1: 1 atom
    return dict(
        pred_energy=torch.tensor([1.0, -2.0], dtype=torch.float64),
        ref_energy=torch.tensor([0.0, -1.0], dtype=torch.float64),
        pred_forces=torch.tensor([[1.0, 0.0, 0.0], [5.0, 5.0, 5.0], [0.0, 2.0, 0.0]], dtype=torch.float64),
        ref_forces=torch.zeros(3, 3, dtype=torch.float64),
        num_atoms=torch.tensor([2, 1]),
        batch=torch.tensor([0, 0, 1]),
        free_mask=torch.tensor([True, False, True]),
        energy_label_weight=torch.ones(2, dtype=torch.float64),
        forces_label_weight=torch.ones(2, dtype=torch.float64),
    )


def test_mse_loss_by_hand(batch):
    out = energy_force_loss(**batch, energy_weight=2.0, forces_weight=3.0, kind="mse")
    e = ((1.0 / 2) ** 2 + (1.0 / 1) ** 2) / 2  # per-atom energy errors 0.5 and -1.0
    f = (1.0 + 4.0) / (3 * 2)  # free atoms 0 and 2: 6 components, fixed atom 1 ignored
    assert out["energy"].item() == pytest.approx(e)
    assert out["forces"].item() == pytest.approx(f)
    assert out["loss"].item() == pytest.approx(2 * e + 3 * f)


def test_huber_loss_by_hand(batch):
    delta = 0.75
    h = lambda x: 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)  # noqa: E731
    out = energy_force_loss(**batch, energy_weight=1.0, forces_weight=1.0, kind="huber", huber_delta=delta)
    assert out["energy"].item() == pytest.approx((h(0.5) + h(1.0)) / 2)
    assert out["forces"].item() == pytest.approx((h(1.0) + h(2.0)) / 6)


def test_missing_labels_are_masked(batch):
    batch["energy_label_weight"] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    batch["forces_label_weight"] = torch.tensor([1.0, 0.0], dtype=torch.float64)
    out = energy_force_loss(**batch, kind="mse")
    assert out["energy"].item() == pytest.approx(1.0)
    assert out["forces"].item() == pytest.approx(1.0 / 3)


def test_bad_kind(batch):
    with pytest.raises(ValueError, match="'mse' or 'huber'"):
        energy_force_loss(**batch, kind="l1")


def test_metrics_by_hand(batch):
    m = SplitMetrics().double()
    mask = batch["free_mask"]
    m.update(batch["pred_energy"], batch["ref_energy"], batch["num_atoms"], batch["energy_label_weight"],
             batch["pred_forces"], batch["ref_forces"], mask)
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["energy_mae"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["energy_rmse"] == pytest.approx(math.sqrt((0.25 + 1.0) / 2))
    assert out["forces_mae"] == pytest.approx((1.0 + 2.0) / 6)
    assert out["forces_rmse"] == pytest.approx(math.sqrt(5.0 / 6))
    # a second batch accumulates (sums and counts, not averages of averages)
    m.update(torch.tensor([0.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64), torch.tensor([3]),
             torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
             torch.zeros(1, 3, dtype=torch.float64), torch.tensor([True]))
    out = {k: v.item() for k, v in m.compute().items()}
    assert out["energy_mae"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert out["forces_mae"] == pytest.approx(3.0 / 9)


def test_metrics_without_forces_drop_force_keys():
    m = SplitMetrics().double()
    m.update(torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64), torch.tensor([1]),
             torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
             torch.zeros(1, 3, dtype=torch.float64), torch.tensor([False]))
    assert set(m.compute()) == {"energy_mae", "energy_rmse"}
