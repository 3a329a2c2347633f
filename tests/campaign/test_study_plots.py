"""Study figures: seed bands from the seeds' common rounds; the savings plot from per-seed savings."""

import numpy as np
import pytest

from al_lightning.campaign.analysis import OOD_SPLITS, label_savings
from al_lightning.campaign.study_plots import plot_savings, plot_study_curves, seed_curves
from al_lightning.campaign.study_report import savings, savings_per_seed


def _state(n_labeled, maes):
    rounds = [{"round": r, "n_labeled": n, "n_labeled_atoms": 10 * n,
               "metrics": {f"{s}/forces_mae": m + 0.01 * k for k, s in enumerate(("test_id", *OOD_SPLITS))}}
              for r, (n, m) in enumerate(zip(n_labeled, maes))]
    return {"rounds": rounds}


def _runs():
    rng = np.random.default_rng(0)
    return {arm: {seed: _state(xs, list(base[: len(xs)] + rng.normal(0, 0.01, len(xs)))) for seed in range(4)}
            for arm, xs, base in (("random", [30, 50, 70, 90, 110], np.array([1.0, 0.8, 0.7, 0.6, 0.55])),
                                  ("ntk_ef", [30, 50, 70], np.array([1.0, 0.7, 0.58])))}


def test_seed_curves_cut_to_the_rounds_every_seed_reached():
    seeds = {0: _state([30, 50, 70], [1.0, 0.8, 0.7]), 1: _state([30, 50], [0.9, 0.6])}
    x, y = seed_curves(seeds, "test_id")
    assert x.tolist() == [30, 50] and y.tolist() == [[1.0, 0.8], [0.9, 0.6]]
    _, y_ood = seed_curves(seeds, "test_ood_cat")
    assert y_ood[0, 0] == pytest.approx(1.02)


def test_savings_per_seed_is_what_the_summary_and_the_plot_use(tmp_path):
    runs, spec = _runs(), {"rounds": 2}
    per_seed = savings_per_seed(runs, spec, "random")
    assert set(per_seed) == {f"ntk_ef / {e} / {u}" for e in ("test_id", "ood_pooled") for u in ("structures", "atoms")}
    by_hand = [label_savings(runs["random"][s], runs["ntk_ef"][s], ["test_id"], 2) for s in range(4)]
    assert per_seed["ntk_ef / test_id / structures"] == by_hand
    assert savings(runs, spec, "random")["ntk_ef / test_id / structures"]["mean"] == pytest.approx(
        np.mean([v["savings"] for v in by_hand]))
    plot_savings(runs, spec, "random", tmp_path / "savings.png", "synthetic")
    plot_study_curves(runs, tmp_path / "curves.png", "synthetic", reference="random")
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in ("savings.png", "curves.png"))


def test_no_savings_plot_without_a_comparable_arm(tmp_path):
    runs = {"random": _runs()["random"]}
    plot_savings(runs, {"rounds": 2}, "random", tmp_path / "savings.png", "only the reference")
    assert not (tmp_path / "savings.png").exists()


def test_savings_figure_defines_its_pooled_endpoints(tmp_path, monkeypatch):
    """The figure says what ood_pooled is (the EMT splits by default, the analysis block's otherwise)."""
    import al_lightning.campaign.study_plots as plots

    titles = []
    monkeypatch.setattr("al_lightning.campaign.plotting.save", lambda fig, path, rect=None: titles.append(fig._suptitle.get_text()))
    runs = _runs()
    plots.plot_savings(runs, {"rounds": 2}, "random", tmp_path / "a.png", "synthetic")
    assert f"ood_pooled = the mean force MAE of {', '.join(OOD_SPLITS)}" in titles[-1]
    spec = {"rounds": 2, "endpoints": {"test_id": ["test_id"], "ood_pair": ["test_ood_ads", "test_ood_cat"]}}
    plots.plot_savings(runs, spec, "random", tmp_path / "b.png", "synthetic")
    assert "ood_pair = the mean force MAE of test_ood_ads, test_ood_cat" in titles[-1] and "ood_pooled" not in titles[-1]


def test_paired_differences_to_the_reference_skip_round_zero_and_match_a_hand_computation():
    from al_lightning.campaign.analysis import t_half_width
    from al_lightning.campaign.study_plots import _differences

    runs = _runs()
    x, mean, half = _differences(runs["ntk_ef"], runs["random"], "test_id")
    d = np.array([[runs["ntk_ef"][s]["rounds"][r]["metrics"]["test_id/forces_mae"]
                   - runs["random"][s]["rounds"][r]["metrics"]["test_id/forces_mae"] for r in (1, 2)] for s in range(4)])
    assert x.tolist() == [50, 70]
    np.testing.assert_allclose(mean, d.mean(axis=0))
    np.testing.assert_allclose(half, [t_half_width(d[:, 0]), t_half_width(d[:, 1])])


@pytest.mark.parametrize("config, words", [
    ({"strategy": "random", "strategy_kwargs": {"feature_kind": "ntk_ef"}}, "uniform random [random]"),
    ({"strategy": "pv_lcmd", "strategy_kwargs": {"feature_kind": "ntk_e"}}, "PV shortlist, then LCMD on energy NTK [pv_lcmd]"),
    ({"strategy": "lcmd"}, "LCMD over the whole pool on force-aware NTK (energy + forces) [lcmd]"),
    ({"strategy": "committee_f", "strategy_kwargs": {"members": 3}}, "committee, force disagreement, 3 members"),
    ({"strategy": "oracle_error"}, "control: largest true force error"),
    ({"strategy": {"class_path": "my.Rule", "init_args": {}}}, "Rule [Rule]"),
])
def test_every_arm_is_described_by_its_rule(config, words):
    from al_lightning.campaign.study_plots import describe_arm

    assert words in describe_arm(config)
