"""A study's figures, from the campaign summaries alone (so ``--report-only`` redraws them).

- :func:`plot_study_curves` — force MAE against labels per test split, one line per strategy
  (mean over seeds) with a band of ± one standard deviation over seeds;
- :func:`plot_savings` — the label savings of each arm against the reference (structures and
  atoms, test_id and the OOD splits pooled): every seed as a dot (hollow: censored, the reference
  never reached the arm's error, so a lower bound), the mean with its 95 % t-interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np


def seed_curves(seeds: Dict, split: str, metric: str = "forces_mae") -> Tuple[np.ndarray, np.ndarray]:
    """(labels [R+1], errors [n_seeds, R+1]) of one strategy on one split, cut to the rounds that
    every seed reached (NaN where a round lacks the metric)."""
    states = list(seeds.values())
    n = min(len(s["rounds"]) for s in states)
    x = np.array([r["n_labeled"] for r in states[0]["rounds"][:n]], float)
    y = np.array([[r["metrics"].get(f"{split}/{metric}", np.nan) for r in s["rounds"][:n]] for s in states], float)
    return x, y


def plot_study_curves(strategies: Dict, path: Path, title: str) -> None:
    """One panel per test split: force MAE vs labels, mean over seeds ± one std (shaded)."""
    from al_lightning.campaign.plotting import ordered_splits, pyplot, save, scale_axis

    plt = pyplot()
    any_state = next(iter(next(iter(strategies.values())).values()))
    splits = ordered_splits(k.split("/")[0] for k in any_state["rounds"][-1]["metrics"] if k.startswith("test"))
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.6), squeeze=False)
    colours = plt.cm.tab10.colors if len(strategies) <= 10 else plt.cm.tab20.colors
    for ax, split in zip(axes[0], splits):
        shown = []
        for colour, (label, seeds) in zip(colours, strategies.items()):
            x, y = seed_curves(seeds, split)
            mean = np.nanmean(y, axis=0)
            ax.plot(x, mean, marker="o", ms=3, color=colour, label=f"{label} (n={len(y)})")
            if len(y) > 1:
                sd = np.nanstd(y, axis=0, ddof=1)
                ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.15, linewidth=0)
                shown += list(mean - sd) + list(mean + sd)
            shown += list(mean)
        scale_axis(ax, shown)
        ax.set_title(split)
        ax.set_xlabel("labels")
        ax.set_ylabel("force MAE (eV/Å)")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{title}: mean over seeds, band ± 1 std")
    save(fig, path)


def _savings_panel(ax, per_seed: Dict, arms, endpoint: str, unit: str) -> None:
    from al_lightning.campaign.analysis import savings_summary

    for row, arm in enumerate(arms):
        vals = per_seed.get(f"{arm} / {endpoint} / {unit}")
        if not vals:
            continue
        s = np.array([v["savings"] for v in vals], float)
        cens = np.array([bool(v["censored"]) for v in vals])
        jitter = row + np.linspace(-0.18, 0.18, len(s))
        ax.scatter(s[~cens], jitter[~cens], s=14, color="tab:blue", alpha=0.7, zorder=2)
        ax.scatter(s[cens], jitter[cens], s=14, facecolors="none", edgecolors="tab:red", zorder=2)
        summ = savings_summary(vals)
        ax.errorbar(summ["mean"], row, xerr=summ["ci95"] if np.isfinite(summ["ci95"]) else None, fmt="D",
                    ms=5, color="black", capsize=3, zorder=3)
    ax.axvline(0.0, color="0.4", lw=0.8)
    ax.set_yticks(range(len(arms)), arms)
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_title(f"{endpoint}, in {unit}")
    ax.set_xlabel(f"{unit} saved (reference needs − arm used)")


def plot_savings(runs: Dict, spec: Dict, reference: str, path: Path, title: str) -> None:
    """Label savings of every arm against ``reference`` at round ``spec['rounds']``: a 2 × 2 grid
    (structures / atoms × test_id / OOD pooled). Positive: the arm needed fewer labels."""
    from al_lightning.campaign.plotting import pyplot, save
    from al_lightning.campaign.study_report import endpoints, savings_per_seed

    per_seed = savings_per_seed(runs, spec, reference)
    if not per_seed:
        return
    plt = pyplot()
    arms = [a for a in runs if a != reference]
    names = list(endpoints(spec))
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 1.4 + 2 * (1.0 + 0.45 * len(arms))), squeeze=False)
    for i, unit in enumerate(("structures", "atoms")):
        for j, endpoint in enumerate(names):
            _savings_panel(axes[i][j], per_seed, arms, endpoint, unit)
    pooled = "; ".join(f"{name} = the mean force MAE of {', '.join(splits)}"
                       for name, splits in endpoints(spec).items() if len(splits) > 1)
    fig.suptitle(f"{title}: labels {reference} needs to reach each arm's round-{spec['rounds']} force MAE, minus the "
                 "arm's\n(dots: seeds; hollow red: censored, a lower bound; ◆: mean ± 95 % CI)"
                 + (f"\n{pooled}" if pooled else ""), fontsize=9)
    save(fig, path)
