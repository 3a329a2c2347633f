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

from typing import Dict, List, Tuple

import numpy as np

from al_lightning.campaign.analysis import (OOD_SPLITS, curve, endpoint_auc, holm, label_savings, paired_test,
                                            savings_summary)

ENDPOINTS = {"test_id": ("test_id",), "ood_pooled": OOD_SPLITS}  # the EMT benchmark's (analysis default)


def endpoints(spec: Dict) -> Dict[str, Tuple[str, ...]]:
    """Endpoint name → splits averaged: the analysis block's ``endpoints`` (e.g. the xTB benchmark's
    ``{test_id: [test_id], ood_pooled: [test_ood_mol, test_ood_rxn]}``), else :data:`ENDPOINTS`."""
    given = spec.get("endpoints")
    return {k: tuple(v) for k, v in given.items()} if given else dict(ENDPOINTS)


def _common(a: Dict, b: Dict) -> List:
    return sorted(set(a) & set(b))


def _paired(runs: Dict, pairs, spec: Dict) -> Dict:
    """{"arm vs other / endpoint": paired test of the endpoint AUCs} over each pair's common seeds."""
    out, r = {}, int(spec["rounds"])
    for arm, other in pairs:
        seeds = _common(runs.get(arm, {}), runs.get(other, {}))
        for name, splits in endpoints(spec).items():
            diffs = [endpoint_auc(runs[arm][s], splits, r) - endpoint_auc(runs[other][s], splits, r) for s in seeds]
            if len(diffs) >= 2:
                out[f"{arm} vs {other} / {name}"] = {**paired_test(diffs), "seeds": seeds}
    return out


def primary(runs: Dict, spec: Dict) -> Dict:
    """{"arm vs other / endpoint": paired test + Holm-adjusted p} over the common seeds."""
    out = _paired(runs, spec.get("primary", []), spec)
    adjusted = holm({k: v["p_t"] for k, v in out.items()})
    for k in out:
        out[k]["p_holm"] = adjusted[k]
    return out


def controls(runs: Dict, spec: Dict, reference: str) -> Dict:
    out = _paired(runs, [(arm, reference) for arm in spec.get("controls", [])], spec)
    return {k: {m: x for m, x in v.items() if m != "seeds"} for k, v in out.items()}


def per_round(runs: Dict, spec: Dict, reference: str) -> Dict:
    """{"arm / endpoint": [paired test of the round's force MAE, arm − reference, for rounds 1..R]}:
    where along the curve an arm gains or loses (a diagnostic, outside every test family)."""
    r = int(spec["rounds"])
    out = {}
    for arm in runs:
        seeds = _common(runs[arm], runs.get(reference, {}))
        if arm == reference or len(seeds) < 2:
            continue
        for name, splits in endpoints(spec).items():
            ys = {a: np.array([curve(runs[a][s], splits, rounds=r)[1][1:] for s in seeds]) for a in (arm, reference)}
            out[f"{arm} / {name}"] = [paired_test(d) for d in (ys[arm] - ys[reference]).T]
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
        for name, splits in endpoints(spec).items():
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
    """The prespecified analysis; ``exploratory`` pairs (paired tests without a multiplicity
    correction) and ``per_round: true`` (per-round differences to the reference) only when asked."""
    out = {"rounds": int(spec["rounds"]), "primary": primary(runs, spec),
           "controls": controls(runs, spec, reference), "savings": savings(runs, spec, reference),
           "selections": selections(runs, spec)}
    if spec.get("exploratory"):
        out["exploratory"] = _paired(runs, spec["exploratory"], spec)
    if spec.get("per_round"):
        out["per_round"] = per_round(runs, spec, reference)
    return out


def _md_section(title: str, header: List[str], rows: List[str], intro: str = "") -> List[str]:
    """A report section: ``## title``, an optional intro paragraph, a table (``header`` cells, row lines)."""
    return ["", f"## {title}", "", *([intro, ""] if intro else []), "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header), *rows]


def _md_tests(title: str, tests: Dict, holm_column: bool, first: str = "comparison") -> List[str]:
    header = [f"{first} / endpoint", "n", "Δ AUC", "95 % CI", "p (t)", *(["p (Holm)"] if holm_column else []),
              "p (Wilcoxon)"]
    rows = [f"| {k} | {v['n']} | {v['mean']:+.5f} | ± {v['ci95']:.5f} | {v['p_t']:.4f} |"
            + (f" {v['p_holm']:.4f} |" if holm_column else "") + f" {v['p_wilcoxon']:.4f} |" for k, v in tests.items()]
    return _md_section(title, header, rows)


def _md_savings(result: Dict) -> List[str]:
    rows = [f"| {k} | {v['n']} | {v['mean']:+.1f} | ± {v['ci95']:.1f} | {v['fraction_of_arm_labels']:+.1%} | "
            f"{v['censored_seeds']} |" for k, v in result["savings"].items()]
    return _md_section("Label savings against the reference",
                       ["arm / endpoint / unit", "n", "savings", "95 % CI", "share of the arm's labels", "censored"],
                       rows, intro="Labels the reference needs to reach the arm's final force MAE (interpolated on its "
                       "curve, extended beyond R rounds), minus the arm's labels; censored seeds: the reference never "
                       "got there (a lower bound).")


def _md_selections(result: Dict) -> List[str]:
    rows = []
    for arm, v in result.get("selections", {}).items():
        cells = [f"{v[k]:.3g}" if k in v else "–" for k in (*DESCRIPTORS, "calibration_test_id")]
        rows.append(f"| {arm} | {v['campaigns']} | " + " | ".join(cells) + " |")
    return _md_section("What each rule bought (from the labels; mean over acquisition rounds and campaigns)",
                       ["arm", "campaigns", "atoms", "label max \\|F\\| (eV/Å)", "energy/atom (eV)",
                        "trajectories per batch", "near-duplicates", "calibration Spearman (test_id)"], rows)


def _md_per_round(result: Dict) -> List[str]:
    rounds = result["rounds"]
    rows = [f"| {k} | " + " | ".join(f"{t['mean']:+.4f} ± {t['ci95']:.4f}" for t in tests) + " |"
            for k, tests in result["per_round"].items()]
    return _md_section("Per round: force MAE, arm − reference (diagnostic)",
                       ["arm / endpoint", *(f"round {r}" for r in range(1, rounds + 1))], rows,
                       intro="Paired mean difference ± 95 % half width, eV/Å; at each round both arms hold the same "
                       "number of labels.")


def markdown(study: str, result: Dict) -> str:
    lines = [f"# Study `{study}`: the prespecified analysis", "",
             f"Endpoints: force-MAE AUC over rounds 1..{result['rounds']} (eV/Å), on test_id and on the "
             "three OOD splits pooled. Δ = arm − comparator, paired by seed; 95 % t-interval; paired-t p, "
             "Holm-adjusted over the primary family; exact Wilcoxon p as the sensitivity check."]
    lines += _md_tests("Primary comparisons", result["primary"], holm_column=True)
    lines += _md_tests("Controls against the reference", result["controls"], holm_column=False, first="control")
    lines += _md_savings(result) + _md_selections(result)
    if "exploratory" in result:
        lines += _md_tests("Exploratory comparisons (chosen after the study finished: not prespecified, "
                           "no multiplicity correction)", result["exploratory"], holm_column=False)
    if "per_round" in result:
        lines += _md_per_round(result)
    return "\n".join(lines) + "\n"
