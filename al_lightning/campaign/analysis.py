"""The statistics of a prespecified study (docs/results/PROTOCOL.md): endpoints, paired tests
with Holm's correction, and label savings against random. Pure functions on campaign states
(campaign.json dicts) and arrays; nothing here reads files.

- :func:`endpoint_auc` — force-MAE AUC over rounds 1..R (round 0 is shared by every arm of a
  seed), on one split or on the mean of several per round (the OOD splits pooled);
- :func:`paired_test` — paired t (mean, 95 % interval, p) and the exact Wilcoxon signed-rank p;
- :func:`holm` — Holm–Bonferroni adjusted p-values (step-down, monotone);
- :func:`labels_to_reach` / :func:`label_savings` — labels (structures or atoms) random needs to
  reach a target error, interpolated on its learning curve; censored when it never does.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

OOD_SPLITS = ("test_ood_ads", "test_ood_cat", "test_ood_both")


def mean_over_range(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x) divided by the x range: the mean of y over it (the one "AUC"
    formula of every study table)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (x[-1] - x[0]))


def t_half_width(values: Sequence[float]) -> float:
    """Half width of the 95 % t-interval of the mean of ``values`` (nan for fewer than two)."""
    from scipy.stats import t

    v = np.asarray(values, float)
    n = len(v)
    return float(t.ppf(0.975, n - 1) * np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def curve(state: Dict, splits: Sequence[str], metric: str = "forces_mae", x: str = "n_labeled",
          rounds: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) per round: x = labels (``n_labeled``) or labeled atoms (``n_labeled_atoms``), y = the
    metric averaged over ``splits``; only rounds 0..``rounds`` when given."""
    recs = [r for r in state["rounds"] if rounds is None or r["round"] <= rounds]
    xs = np.array([r[x] for r in recs], float)
    ys = np.array([np.mean([r["metrics"][f"{s}/{metric}"] for s in splits]) for r in recs], float)
    return xs, ys


def endpoint_auc(state: Dict, splits: Sequence[str], rounds: int, metric: str = "forces_mae") -> float:
    """Trapezoid area under the curve over rounds 1..``rounds``, divided by its label range
    (= the mean error over that range). Needs at least rounds 1 and 2."""
    if not any(r["round"] == rounds for r in state["rounds"]):
        raise ValueError(f"endpoint AUC over rounds 1..{rounds}: the campaign stops at round "
                         f"{state['rounds'][-1]['round']}")
    x, y = curve(state, splits, metric, rounds=rounds)
    x, y = x[1:], y[1:]
    if len(x) < 2:
        raise ValueError(f"endpoint AUC needs rounds 1..{rounds} (>= 2 points), campaign has {len(x)}")
    return mean_over_range(x, y)


def paired_test(diffs: Sequence[float]) -> Dict[str, float]:
    """Paired differences (arm − comparator, one per seed): mean, 95 % t-interval half width,
    two-sided paired-t p and exact two-sided Wilcoxon signed-rank p."""
    from scipy.stats import ttest_1samp, wilcoxon

    d = np.asarray(diffs, float)
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired test needs >= 2 seeds, got {n}")
    sd = float(np.std(d, ddof=1))
    half = t_half_width(d)
    p_t = float(ttest_1samp(d, 0.0).pvalue) if sd > 0 else (0.0 if np.mean(d) != 0 else 1.0)
    p_w = float(wilcoxon(d, method="exact").pvalue) if np.any(d != 0) else 1.0
    return {"n": n, "mean": float(np.mean(d)), "sd": sd, "ci95": half, "p_t": p_t, "p_wilcoxon": p_w}


def holm(pvalues: Dict[str, float]) -> Dict[str, float]:
    """Holm–Bonferroni adjusted p-values of a family of hypotheses (same keys)."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        out[name] = running
    return out


def labels_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> Tuple[float, bool]:
    """Labels at which the curve (x ascending) first reaches ``target``, linear between rounds;
    (x[-1], True) when it never does (censored)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    hit = np.nonzero(y <= target)[0]
    if not len(hit):
        return float(x[-1]), True
    i = int(hit[0])
    if i == 0:
        return float(x[0]), False
    frac = (y[i - 1] - target) / (y[i - 1] - y[i])
    return float(x[i - 1] + frac * (x[i] - x[i - 1])), False


def label_savings(random_state: Dict, arm_state: Dict, splits: Sequence[str], rounds: int,
                  x: str = "n_labeled") -> Dict[str, float]:
    """Labels (``x``: structures or atoms) random needs to reach the arm's final error (round
    ``rounds``), minus what the arm used. ``censored``: random never got there (the savings are
    then a lower bound)."""
    ax, ay = curve(arm_state, splits, x=x, rounds=rounds)
    rx, ry = curve(random_state, splits, x=x)
    need, censored = labels_to_reach(rx, ry, float(ay[-1]))
    return {"random_needs": need, "arm_used": float(ax[-1]), "savings": need - float(ax[-1]),
            "censored": censored}


def savings_summary(values: List[Dict[str, float]]) -> Dict[str, float]:
    """Mean savings over seeds with a 95 % t-interval; how many seeds were censored."""
    s = np.array([v["savings"] for v in values], float)
    n = len(s)
    half = t_half_width(s)
    used = float(np.mean([v["arm_used"] for v in values]))
    return {"mean": float(s.mean()), "ci95": half, "fraction_of_arm_labels": float(s.mean() / used),
            "censored_seeds": int(sum(v["censored"] for v in values)), "n": n}
