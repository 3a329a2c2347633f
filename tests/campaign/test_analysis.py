"""Study statistics against hand computations and scipy's own references."""

import numpy as np
import pytest

from al_lightning.campaign.analysis import (OOD_SPLITS, endpoint_auc, holm, label_savings, labels_to_reach,
                                            paired_test)


def _state(n_labeled, maes, atoms=None):
    rounds = []
    for r, (n, m) in enumerate(zip(n_labeled, maes)):
        metrics = {f"{s}/forces_mae": m + 0.01 * k for k, s in enumerate(("test_id", *OOD_SPLITS))}
        rounds.append({"round": r, "n_labeled": n, "n_labeled_atoms": (atoms or n_labeled)[r], "metrics": metrics})
    return {"rounds": rounds}


def test_endpoint_auc_skips_round_zero_and_pools_the_ood_splits():
    st = _state([10, 20, 30, 40], [9.0, 4.0, 2.0, 1.0])
    assert endpoint_auc(st, ["test_id"], rounds=3) == pytest.approx(((4 + 2) / 2 * 10 + (2 + 1) / 2 * 10) / 20)
    ood = endpoint_auc(st, OOD_SPLITS, rounds=3)  # OOD splits are +0.01, +0.02, +0.03: mean +0.02
    assert ood == pytest.approx(endpoint_auc(st, ["test_id"], rounds=3) + 0.02)
    assert endpoint_auc(st, ["test_id"], rounds=2) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="needs rounds 1..1"):
        endpoint_auc(st, ["test_id"], rounds=1)


def test_holm_by_hand():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert adj == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})  # b: max(0.08, 0.09)


def test_paired_test_matches_scipy():
    from scipy.stats import ttest_rel, wilcoxon

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.1, 12), rng.normal(1.05, 0.1, 12)
    res = paired_test(a - b)
    assert res["p_t"] == pytest.approx(ttest_rel(a, b).pvalue)
    assert res["p_wilcoxon"] == pytest.approx(wilcoxon(a - b, method="exact").pvalue)
    assert res["ci95"] == pytest.approx(2.200985160082949 * np.std(a - b, ddof=1) / np.sqrt(12))
    assert paired_test([0.1, 0.2, 0.3, 0.4, 0.5])["p_wilcoxon"] == pytest.approx(2 / 2 ** 5)  # smallest exact p at n=5


def test_labels_to_reach_interpolates_and_censors():
    x, y = np.array([10, 20, 40]), np.array([1.0, 0.5, 0.3])
    assert labels_to_reach(x, y, 0.4) == (30.0, False)
    assert labels_to_reach(x, y, 2.0) == (10.0, False)
    assert labels_to_reach(x, y, 0.1) == (40.0, True)


def test_label_savings_in_structures_and_atoms():
    random = _state([10, 20, 30, 40, 50], [1.0, 0.8, 0.6, 0.5, 0.4], atoms=[100, 200, 300, 400, 500])
    arm = _state([10, 20, 30], [1.0, 0.7, 0.5], atoms=[100, 250, 400])
    s = label_savings(random, arm, ["test_id"], rounds=2)
    assert s == {"random_needs": 40.0, "arm_used": 30.0, "savings": 10.0, "censored": False}
    a = label_savings(random, arm, ["test_id"], rounds=2, x="n_labeled_atoms")
    assert a["random_needs"] == 400.0 and a["arm_used"] == 400.0 and a["savings"] == 0.0
    better = _state([10, 20, 30], [1.0, 0.5, 0.2])
    assert label_savings(random, better, ["test_id"], rounds=2)["censored"] is True


def test_prespecified_analysis_on_synthetic_campaigns():
    from al_lightning.campaign.study_report import analyse, markdown

    rng = np.random.default_rng(1)
    runs = {arm: {seed: _state([30, 50, 70, 90], list(base + rng.normal(0, 0.01, 4)), atoms=[300, 520, 730, 950])
                  for seed in range(6)}
            for arm, base in (("random", np.array([1.0, 0.8, 0.7, 0.6])), ("ntk_ef", np.array([1.0, 0.7, 0.6, 0.5])),
                              ("ntk_e", np.array([1.0, 0.8, 0.7, 0.6])), ("oracle", np.array([1.0, 0.6, 0.5, 0.4])))}
    spec = {"rounds": 2, "primary": [["ntk_ef", "random"], ["ntk_ef", "ntk_e"]], "controls": ["oracle"]}
    res = analyse(runs, spec, "random")
    assert len(res["primary"]) == 4 and all(v["n"] == 6 for v in res["primary"].values())
    assert {k: v["p_holm"] for k, v in res["primary"].items()} == holm({k: v["p_t"] for k, v in res["primary"].items()})
    auc = lambda arm, s: endpoint_auc(runs[arm][s], ["test_id"], 2)  # noqa: E731
    assert res["primary"]["ntk_ef vs random / test_id"]["mean"] == pytest.approx(
        np.mean([auc("ntk_ef", s) - auc("random", s) for s in range(6)]))
    assert res["primary"]["ntk_ef vs random / test_id"]["mean"] < 0 and res["controls"]["oracle vs random / test_id"]["mean"] < 0
    assert res["savings"]["ntk_ef / test_id / structures"]["mean"] > 0
    assert "| ntk_ef vs random / test_id | 6 |" in markdown("s", res)
    for seed, st in runs["ntk_ef"].items():  # rounds that recorded what they bought
        for rec, systems in zip(st["rounds"][:2], (3, 5)):
            rec["acquired"] = {"atoms_mean": 10.0 + seed, "systems": systems, "near_duplicates": 0.1}
    sel = analyse(runs, spec, "random")["selections"]
    assert set(sel) == {"ntk_ef"} and sel["ntk_ef"]["campaigns"] == 6
    assert sel["ntk_ef"]["systems"] == pytest.approx(4.0) and sel["ntk_ef"]["atoms_mean"] == pytest.approx(12.5)


def test_exploratory_and_per_round_only_when_asked():
    from al_lightning.campaign.study_report import analyse, markdown

    rng = np.random.default_rng(2)
    runs = {arm: {seed: _state([30, 50, 70], list(base + rng.normal(0, 0.01, 3))) for seed in range(5)}
            for arm, base in (("random", np.array([1.0, 0.8, 0.7])), ("ntk_ef", np.array([1.0, 0.6, 0.75])),
                              ("lcmd", np.array([1.0, 0.9, 0.5])))}
    spec = {"rounds": 2, "primary": [["ntk_ef", "random"]]}
    plain = analyse(runs, spec, "random")
    assert "exploratory" not in plain and "per_round" not in plain and "Exploratory" not in markdown("s", plain)
    res = analyse(runs, {**spec, "exploratory": [["ntk_ef", "lcmd"]], "per_round": True}, "random")
    # exploratory pairs: the same paired AUC test as the primary family, but no Holm column
    auc = lambda arm, s: endpoint_auc(runs[arm][s], ["test_id"], 2)  # noqa: E731
    assert res["exploratory"]["ntk_ef vs lcmd / test_id"]["mean"] == pytest.approx(
        np.mean([auc("ntk_ef", s) - auc("lcmd", s) for s in range(5)]))
    assert "p_holm" not in res["exploratory"]["ntk_ef vs lcmd / test_id"]
    # per round: rounds 1..R of arm − reference, each its own paired test; ntk_ef leads at round 1,
    # trails at round 2 (by construction), and the OOD pool is the mean of the three OOD splits
    rows = res["per_round"]["ntk_ef / test_id"]
    assert len(rows) == 2 and rows[0]["mean"] < 0 < rows[1]["mean"]
    d1 = [runs["ntk_ef"][s]["rounds"][1]["metrics"]["test_id/forces_mae"]
          - runs["random"][s]["rounds"][1]["metrics"]["test_id/forces_mae"] for s in range(5)]
    assert rows[0]["mean"] == pytest.approx(np.mean(d1))
    assert res["per_round"]["ntk_ef / ood_pooled"][0]["mean"] == pytest.approx(np.mean(d1))  # offsets cancel
    assert set(res["per_round"]) == {f"{a} / {e}" for a in ("ntk_ef", "lcmd") for e in ("test_id", "ood_pooled")}
    md = markdown("s", res)
    assert "## Exploratory comparisons" in md and "| ntk_ef / test_id | " in md
