"""A study's figures, from the campaign summaries alone (so ``--report-only`` redraws them).

- :func:`plot_study_curves` — force MAE against labels per test split, one line per arm (mean over
  seeds), and each arm's paired difference to the reference with its 95 % t-interval; one legend
  saying what every arm's rule is (:func:`describe_arm`);
- :func:`plot_savings` — the label savings of each arm against the reference (structures and
  atoms, test_id and the OOD splits pooled): every seed as a dot (hollow: censored, the reference
  never reached the arm's error, so a lower bound), the mean with its 95 % t-interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np


def seed_curves(seeds: Dict, split: str, metric: str = "forces_mae") -> Tuple[np.ndarray, np.ndarray]:
    """(labels [R+1], errors [n_seeds, R+1]) of one strategy on one split, cut to the rounds that
    every seed reached (NaN where a round lacks the metric)."""
    states = list(seeds.values())
    n = min(len(s["rounds"]) for s in states)
    x = np.array([r["n_labeled"] for r in states[0]["rounds"][:n]], float)
    y = np.array([[r["metrics"].get(f"{split}/{metric}", np.nan) for r in s["rounds"][:n]] for s in states], float)
    return x, y


RULES = {"random": "uniform random", "pv": "posterior variance", "pv_lcmd": "PV shortlist, then LCMD", "pv_topb": "top-B PV",
         "lcmd": "LCMD over the whole pool", "committee_e": "committee, energy disagreement",
         "committee_f": "committee, force disagreement",
         "oracle_error": "control: largest true force error (reads the hidden labels)",
         "one_per_system": "control: one frame per system"}
FEATURES = {"ntk_ef": "force-aware NTK (energy + forces)", "ntk_e": "energy NTK", "ntk_f": "force NTK",
            "activation": "last-layer activations", "descriptor": "MACE descriptors"}


def _component_name(spec) -> str:
    """A feature map's or selector's name in a config: its short name, or the class name of its path."""
    path = spec.get("class_path", "?") if isinstance(spec, dict) else str(spec)
    return path.rpartition(".")[2]


def describe_arm(config: Dict) -> str:
    """What an arm's campaign config selects with, in words (the figures' legend)."""
    from al_lightning.acquisition.config import strategy_label

    spec, kwargs = config.get("strategy", "?"), dict(config.get("strategy_kwargs") or {})
    if isinstance(spec, dict):
        kwargs = {**(spec.get("init_args") or {}), **kwargs}
    name = strategy_label(spec)
    text = RULES.get(name, name)
    if name in ("pv", "pv_lcmd", "pv_topb", "lcmd"):  # the rules that use a feature map (and a selector)
        kind = _component_name(kwargs.get("features", kwargs.get("feature_kind", "ntk_ef")))
        text += f" on {FEATURES.get(kind, kind)}"
        if "selector" in kwargs:
            text += f", selector {_component_name(kwargs['selector'])}"
    if "members" in kwargs:
        text += f", {kwargs['members']} members"
    return f"{text} [{name}]"


def _differences(seeds: Dict, ref: Dict, split: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, mean, 95 % half width) of arm − reference force MAE per round, over common seeds."""
    from al_lightning.campaign.analysis import t_half_width

    common = sorted(set(seeds) & set(ref))
    x, y = seed_curves({s: seeds[s] for s in common}, split)
    _, y_ref = seed_curves({s: ref[s] for s in common}, split)
    d = (y - y_ref[:, : y.shape[1]])[:, 1:]  # round 0: the same model for every arm
    return x[1:], np.nanmean(d, axis=0), np.array([t_half_width(col[np.isfinite(col)]) for col in d.T])


def plot_study_curves(strategies: Dict, path: Path, title: str, reference: Optional[str] = None) -> None:
    """Per test split: force MAE vs labels (mean over seeds, one line per arm) and, under it, each
    arm's paired difference to ``reference`` with its 95 % t-interval; one legend naming every rule."""
    from al_lightning.campaign.plotting import ordered_splits, pyplot, save, scale_axis

    plt = pyplot()
    any_state = next(iter(next(iter(strategies.values())).values()))
    splits = ordered_splits(k.split("/")[0] for k in any_state["rounds"][-1]["metrics"] if k.startswith("test"))
    diff = reference in strategies and len(strategies) > 1
    fig, axes = plt.subplots(1 + diff, len(splits), figsize=(4 * len(splits), 3.2 * (1 + diff) + 1.2),
                             squeeze=False, sharex="col")
    colours = dict(zip(strategies, plt.cm.tab10.colors if len(strategies) <= 10 else plt.cm.tab20.colors))
    arms = [a for a in strategies if a != reference]
    for col, split in enumerate(splits):
        ax, shown = axes[0][col], []
        for label, seeds in strategies.items():
            x, y = seed_curves(seeds, split)
            mean = np.nanmean(y, axis=0)
            ax.plot(x, mean, marker="o", ms=3, color=colours[label], lw=2.2 if label == reference else 1.3)
            shown += list(mean)
        scale_axis(ax, shown)
        ax.set_title(split)
        ax.set_ylabel("force MAE (eV/Å)")
        if diff:
            ax = axes[1][col]
            for k, arm in enumerate(arms):
                x, mean, half = _differences(strategies[arm], strategies[reference], split)
                dodge = (k - (len(arms) - 1) / 2) * 0.015 * (x.max() - x.min() + 1)
                ax.errorbar(x + dodge, mean, yerr=half, fmt="o-", ms=3, lw=1, capsize=2, color=colours[arm])
            ax.axhline(0.0, color=colours[reference], lw=1.5)
            ax.set_ylabel(f"arm − {reference} (eV/Å)")
        axes[-1][col].set_xlabel("labels")
    handles = [plt.Line2D([], [], color=colours[a], marker="o", lw=2.2 if a == reference else 1.3) for a in strategies]
    names = [f"{a}: {describe_arm(next(iter(s.values())).get('config', {}))} (n={len(s)})" for a, s in strategies.items()]
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=7, frameon=False)
    what = f"; below: paired difference to {reference}, mean ± 95 % CI over seeds" if diff else ""
    fig.suptitle(f"{title}: mean over seeds{what}", fontsize=10)
    save(fig, path, rect=(0, 0.02 + 0.032 * ((len(strategies) + 1) // 2) / (1 + diff), 1, 0.95))


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
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 2.2 + 2 * (1.0 + 0.45 * len(arms))), squeeze=False)
    for i, unit in enumerate(("structures", "atoms")):
        for j, endpoint in enumerate(names):
            _savings_panel(axes[i][j], per_seed, arms, endpoint, unit)
    pooled = "; ".join(f"{name} = the mean force MAE of {', '.join(splits)}"
                       for name, splits in endpoints(spec).items() if len(splits) > 1)
    fig.suptitle(f"{title}: labels {reference} needs to reach each arm's round-{spec['rounds']} force MAE, minus the "
                 "arm's\n(dots: seeds; hollow red: censored, a lower bound; ◆: mean ± 95 % CI)"
                 + (f"\n{pooled}" if pooled else ""), fontsize=9)
    rules = [f"{arm}: {describe_arm(next(iter(runs[arm].values())).get('config', {}))}" for arm in [reference, *arms]]
    fig.text(0.5, 0.005, "\n".join(rules), ha="center", va="bottom", fontsize=7)
    save(fig, path, rect=(0, 0.016 * (len(rules) + 1), 1, 1))
