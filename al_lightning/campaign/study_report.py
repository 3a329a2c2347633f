"""The prespecified analysis of a study (``analysis:`` in the study YAML; docs/results/PROTOCOL.md).

    analysis:
      rounds: 5                        # R: endpoints over rounds 1..R (a longer reference is cut)
      primary: [[ntk_ef, random], [ntk_ef, ntk_e], [ntk_ef, committee_f]]
      controls: [oracle, one_per_system]   # each compared with the reference, outside the Holm family

Primary endpoints: force-MAE AUC over rounds 1..R on test_id and on the three OOD splits pooled
(mean per round). Every (comparison, endpoint) is one hypothesis of the Holm family; paired t is
the test, the exact Wilcoxon signed-rank p the sensitivity check. Secondary: final energy and
force MAE per split, and the labels (structures and atoms) the reference needs to reach each
arm's final force MAE. Writes ``analysis.json`` and ``analysis.md`` beside results.md.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from al_lightning.campaign.analysis import (OOD_SPLITS, endpoint_auc, holm, label_savings, paired_test,
                                            savings_summary)

ENDPOINTS = {"test_id": ("test_id",), "ood_pooled": OOD_SPLITS}


def _common(a: Dict, b: Dict) -> List:
    return sorted(set(a) & set(b))


def primary(runs: Dict, spec: Dict) -> Dict:
    """{"arm vs other / endpoint": paired test + Holm-adjusted p} over the common seeds."""
    r = int(spec["rounds"])
    out = {}
    for arm, other in spec.get("primary", []):
        seeds = _common(runs.get(arm, {}), runs.get(other, {}))
        for name, splits in ENDPOINTS.items():
            diffs = [endpoint_auc(runs[arm][s], splits, r) - endpoint_auc(runs[other][s], splits, r) for s in seeds]
            if len(diffs) >= 2:
                out[f"{arm} vs {other} / {name}"] = {**paired_test(diffs), "seeds": seeds}
    adjusted = holm({k: v["p_t"] for k, v in out.items()})
    for k in out:
        out[k]["p_holm"] = adjusted[k]
    return out


def controls(runs: Dict, spec: Dict, reference: str) -> Dict:
    r = int(spec["rounds"])
    out = {}
    for arm in spec.get("controls", []):
        seeds = _common(runs.get(arm, {}), runs.get(reference, {}))
        for name, splits in ENDPOINTS.items():
            diffs = [endpoint_auc(runs[arm][s], splits, r) - endpoint_auc(runs[reference][s], splits, r) for s in seeds]
            if len(diffs) >= 2:
                out[f"{arm} vs {reference} / {name}"] = paired_test(diffs)
    return out


def savings_per_seed(runs: Dict, spec: Dict, reference: str) -> Dict[str, List[Dict]]:
    """{"arm / endpoint / unit": [label_savings of each common seed]} against the reference (units:
    structures and atoms; arms with fewer than two common seeds, or without atom counts, left out)."""
    r = int(spec["rounds"])
    out = {}
    for arm in runs:
        if arm == reference:
            continue
        seeds = _common(runs[arm], runs.get(reference, {}))
        for name, splits in ENDPOINTS.items():
            for unit, x in (("structures", "n_labeled"), ("atoms", "n_labeled_atoms")):
                states = [runs[arm][s] for s in seeds] + [runs[reference][s] for s in seeds]
                if len(seeds) < 2 or any(x not in rec for st in states for rec in st["rounds"]):
                    continue
                out[f"{arm} / {name} / {unit}"] = [label_savings(runs[reference][s], runs[arm][s], splits, r, x=x)
                                                  for s in seeds]
    return out


def savings(runs: Dict, spec: Dict, reference: str) -> Dict:
    """Label savings against the reference per arm, endpoint and unit: mean, 95 % interval, censoring."""
    return {k: savings_summary(v) for k, v in savings_per_seed(runs, spec, reference).items()}


DESCRIPTORS = ("atoms_mean", "label_max_force_mean", "label_energy_per_atom_mean", "systems", "near_duplicates")


def selections(runs: Dict, spec: Dict) -> Dict:
    """Per arm: the rounds' ``acquired`` descriptors and the test_id calibration Spearman, averaged
    over the acquisition rounds 0..R-1 and the campaigns that recorded them (``campaigns``)."""
    r = int(spec["rounds"])
    out = {}
    for arm, seeds in runs.items():
        recs = [rec for st in seeds.values() for rec in st["rounds"] if rec["round"] < r and "acquired" in rec]
        if not recs:
            continue
        row = {k: float(np.mean([rec["acquired"][k] for rec in recs if k in rec["acquired"]]))
               for k in DESCRIPTORS if any(k in rec["acquired"] for rec in recs)}
        cal = [rec["acquisition"]["calibration/test_id/spearman_pv_force_error"] for rec in recs
               if "calibration/test_id/spearman_pv_force_error" in rec.get("acquisition", {})]
        if cal:
            row["calibration_test_id"] = float(np.mean(cal))
        row["campaigns"] = sum(any("acquired" in rec for rec in st["rounds"]) for st in seeds.values())
        out[arm] = row
    return out


def analyse(runs: Dict, spec: Dict, reference: str) -> Dict:
    return {"rounds": int(spec["rounds"]), "primary": primary(runs, spec),
            "controls": controls(runs, spec, reference), "savings": savings(runs, spec, reference),
            "selections": selections(runs, spec)}


def markdown(study: str, result: Dict) -> str:
    lines = [f"# Study `{study}`: the prespecified analysis", "",
             f"Endpoints: force-MAE AUC over rounds 1..{result['rounds']} (eV/Å), on test_id and on the "
             "three OOD splits pooled. Δ = arm − comparator, paired by seed; 95 % t-interval; paired-t p, "
             "Holm-adjusted over the primary family; exact Wilcoxon p as the sensitivity check.", "",
             "## Primary comparisons", "", "| comparison / endpoint | n | Δ AUC | 95 % CI | p (t) | p (Holm) | p (Wilcoxon) |",
             "|---|---|---|---|---|---|---|"]
    for k, v in result["primary"].items():
        lines.append(f"| {k} | {v['n']} | {v['mean']:+.5f} | ± {v['ci95']:.5f} | {v['p_t']:.4f} | {v['p_holm']:.4f} | "
                     f"{v['p_wilcoxon']:.4f} |")
    lines += ["", "## Controls against the reference", "", "| control / endpoint | n | Δ AUC | 95 % CI | p (t) | p (Wilcoxon) |",
              "|---|---|---|---|---|---|"]
    for k, v in result["controls"].items():
        lines.append(f"| {k} | {v['n']} | {v['mean']:+.5f} | ± {v['ci95']:.5f} | {v['p_t']:.4f} | {v['p_wilcoxon']:.4f} |")
    lines += ["", "## Label savings against the reference", "",
              "Labels the reference needs to reach the arm's final force MAE (interpolated on its curve, "
              "extended beyond R rounds), minus the arm's labels; censored seeds: the reference never got "
              "there (a lower bound).", "",
              "| arm / endpoint / unit | n | savings | 95 % CI | share of the arm's labels | censored |", "|---|---|---|---|---|---|"]
    for k, v in result["savings"].items():
        lines.append(f"| {k} | {v['n']} | {v['mean']:+.1f} | ± {v['ci95']:.1f} | {v['fraction_of_arm_labels']:+.1%} | "
                     f"{v['censored_seeds']} |")
    lines += ["", "## What each rule bought (from the labels; mean over acquisition rounds and campaigns)", "",
              "| arm | campaigns | atoms | label max \\|F\\| (eV/Å) | energy/atom (eV) | trajectories per batch | near-duplicates | "
              "calibration Spearman (test_id) |", "|---|---|---|---|---|---|---|---|"]
    for arm, v in result.get("selections", {}).items():
        cells = [f"{v[k]:.3g}" if k in v else "–" for k in (*DESCRIPTORS, "calibration_test_id")]
        lines.append(f"| {arm} | {v['campaigns']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
