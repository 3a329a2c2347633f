"""``al-lightning study -c STUDY.yaml``: strategies × seeds (× scenarios) on one dataset.

A study YAML names a base campaign config, extra command-line overrides, the seeds, the
strategies (label → overrides) and optional scenarios (label → overrides, e.g. a biased
pool). Each campaign runs as ``al-lightning fit`` in its own process (``--jobs N`` at a time,
one BLAS thread each; or one submitit job each, ``--executor submitit``) into its own campaign
directory, so an interrupted study resumes campaign by campaign. Each finished campaign's
campaign.json is kept under ``<output>/campaigns/`` (commit it): ``--report-only`` rebuilds
every table and plot from those alone. Results go to ``<output>/``: ``results.json``, ``results.md`` (final-round and AUC MAE/RMSE per split,
mean ± std over seeds, paired difference to the reference strategy with a 95% t-interval),
learning-curve PNGs with seed bands per scenario, a label-savings PNG (study_plots.py), and wall time per strategy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import yaml

from al_lightning.atomic import atomic_write
from al_lightning.campaign.analysis import mean_over_range, t_half_width

METRICS = ("energy_mae", "forces_mae", "energy_rmse", "forces_rmse")


@dataclass
class StudyConfig:
    """Parsed study YAML (paths relative to the YAML file's folder unless absolute)."""

    name: str
    base_config: str
    seeds: List[int]
    strategies: Dict[str, List[str]]
    scenarios: Dict[str, Dict] = field(default_factory=lambda: {"default": {"overrides": []}})
    overrides: List[str] = field(default_factory=list)
    reference: str = "random"
    campaign_root: str = "logs/study"
    output: str = "docs/results"
    analysis: Dict = field(default_factory=dict)  # the prespecified analysis (campaign/study_report.py)
    frozen: bool = False  # a stopped study: only --report-only may run

    @classmethod
    def load(cls, path: Path) -> "StudyConfig":
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict) or "study" not in raw:
            raise ValueError(f"{path}: expected a top-level 'study:' mapping")
        body = dict(raw["study"])
        missing = [k for k in ("name", "base_config", "seeds", "strategies") if k not in body]
        if missing:
            raise ValueError(f"{path}: study lacks {missing}")
        cfg = cls(**body)
        if cfg.reference not in cfg.strategies:
            raise ValueError(f"{path}: study.reference {cfg.reference!r} is not one of the strategies")
        return cfg

    def resolve(self, base: Path, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (base / p).resolve()


def campaign_runs(cfg: StudyConfig):
    """(scenario, strategy, seed, extra args) for every campaign of the study."""
    for scen, spec in cfg.scenarios.items():
        allowed = spec.get("strategies") or list(cfg.strategies)
        for label in allowed:
            for seed in cfg.seeds:
                yield scen, label, seed, list(spec.get("overrides", [])) + list(cfg.strategies[label])


EXECUTORS = ("local", "submitit")


def campaign_args(cfg: StudyConfig, base: Path, root: Path, scen: str, label: str, seed: int, extra) -> List[str]:
    """The ``fit`` arguments of one campaign (its own directory, seed and name)."""
    cdir = _run_dir(root, scen, label, seed)
    return ["fit", "-c", str(cfg.resolve(base, cfg.base_config)), *cfg.overrides, *extra,
            f"--campaign.name={label}", f"--campaign.campaign_dir={cdir}", f"--campaign.seed={seed}",
            f"--seed_everything={seed}", "--trainer.enable_progress_bar=false"]


def recipe(cfg: StudyConfig, base: Path, scen: str, label: str, seed: int, extra) -> str:
    """A hash of what decides one campaign's results — the base config's text, the overrides, the
    strategy's and scenario's arguments and the seed — never paths or the machine."""
    import hashlib

    text = cfg.resolve(base, cfg.base_config).read_text()
    what = json.dumps({"base_config": text, "overrides": list(cfg.overrides), "extra": list(extra),
                       "scenario": scen, "strategy": label, "seed": int(seed)}, sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def run_campaign(args: List[str]) -> int:
    """One campaign in a fresh interpreter with one BLAS thread; its console output goes to
    ``<campaign_dir>/study.log``. Returns the exit status."""
    import os
    import subprocess
    import sys

    cdir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("--campaign.campaign_dir=")))
    cdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(cdir / "study.log", "a") as log:
        return subprocess.run([sys.executable, "-m", "al_lightning.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                              env=env).returncode


def _execute(todo: List[tuple], jobs: int, executor: str, folder: Path, done) -> List[int]:
    """Exit statuses of the campaigns in ``todo`` ((key, args) pairs), ``jobs`` at a time;
    ``done(key)`` runs as soon as a campaign has finished (its summary is kept at once)."""
    if executor == "submitit":  # one job per campaign: SLURM where there is one, local processes otherwise
        import submitit

        ex = submitit.AutoExecutor(folder=str(folder))
        ex.update_parameters(slurm_array_parallelism=jobs, cpus_per_task=1, timeout_min=24 * 60)
        codes = []
        for (key, _), job in zip(todo, ex.map_array(run_campaign, [a for _, a in todo])):
            codes.append(job.result())
            done(key)
        return codes
    from concurrent.futures import ThreadPoolExecutor  # threads wait; each campaign is its own process

    def one(item):
        code = run_campaign(item[1])
        done(item[0])
        return code

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, todo))


def run_study(path: Path, jobs: int = 1, executor: str = "local", report_only: bool = False) -> Path:
    """Run (or resume) every campaign — ``jobs`` at a time, each in its own process (``local``) or
    as one submitit job (``submitit``: SLURM, or local processes without one) — keep each finished
    campaign's campaign.json under ``<output>/campaigns/``, then write the tables and plots from
    those summaries. ``report_only``: only the tables and plots, from the stored summaries.
    Results never depend on ``jobs`` (every campaign is independent and seeded)."""
    path = Path(path).resolve()
    cfg = StudyConfig.load(path)
    if jobs < 1 or executor not in EXECUTORS:
        raise ValueError(f"study: --jobs must be >= 1 and --executor one of {EXECUTORS}")
    base = path.parent.parent if path.parent.name == "configs" else path.parent
    root = cfg.resolve(base, cfg.campaign_root) / cfg.name
    out = cfg.resolve(base, cfg.output) / cfg.name
    if cfg.frozen and not report_only:
        raise ValueError(f"{path}: study {cfg.name} is frozen (a stopped study, see its comments); "
                         "only --report-only rebuilds its tables")
    if not report_only:
        specs = list(campaign_runs(cfg))
        runs = [((scen, label, seed), campaign_args(cfg, base, root, scen, label, seed, extra))
                for scen, label, seed, extra in specs]
        recipes = {(scen, label, seed): recipe(cfg, base, scen, label, seed, extra) for scen, label, seed, extra in specs}
        # seed-major order: an interrupted study leaves whole seeds (every arm), i.e. paired comparisons
        order = {seed: i for i, seed in enumerate(cfg.seeds)}
        # finished = a complete campaign here or a committed summary (a replaced machine keeps only
        # those), each made by this very recipe (else a one-line error: never mix configurations)
        todo = sorted([(key, args) for key, args in runs
                       if _finished_run(root, *key, recipes[key]) is None and not _kept(out, *key, recipes[key])],
                      key=lambda t: order[t[0][2]])
        for key, _ in todo:
            _stamp(root, *key, recipes[key])
        print(f"[study {cfg.name}] {len(runs) - len(todo)} of {len(runs)} campaigns complete; "
              f"running {len(todo)}, {jobs} at a time", flush=True)
        t0 = time.perf_counter()
        codes = _execute(todo, jobs, executor, root / "submitit",
                         lambda key: keep_summary(root, out, *key, recipes[key]))
        for (key, _), code in zip(todo, codes):
            if code != 0:
                raise RuntimeError(f"study {cfg.name}: campaign {'/'.join(map(str, key))} failed (exit {code}); "
                                   f"see {_run_dir(root, *key) / 'study.log'}")
        print(f"[study {cfg.name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        for key, _ in runs:
            keep_summary(root, out, *key, recipes[key])
    elif not (out / "campaigns").is_dir():
        raise ValueError(f"study {cfg.name}: no campaign summaries under {out / 'campaigns'} to report on; "
                         "run the study first (without --report-only)")
    write_results(cfg, out)
    return out


RECIPE_FILE, RECIPE_KEY = "study_recipe.txt", "study_recipe"


def _mismatch(where: Path, made: str, want: str) -> None:
    if made != want:
        raise ValueError(f"{where}: made by another configuration of this study (recipe {made}, the YAML now "
                         f"gives {want}); move it away to rerun that campaign, or restore the study YAML and "
                         "base config it was made with")


def _run_dir(root: Path, scen: str, label: str, seed: int) -> Path:
    return root / scen / label / f"seed{seed}"


def _summary(out: Path, scen: str, label: str, seed: int) -> Path:
    return out / "campaigns" / scen / label / f"seed{seed}.json"


def _complete_state(path: Path) -> "Dict | None":
    """The campaign state stored at ``path`` if it is complete, else None."""
    data = json.loads(path.read_text()) if path.exists() else {}
    return data if data.get("status") == "complete" else None


def _stamp(root: Path, scen: str, label: str, seed: int, recipe_hash: str) -> None:
    """Write the recipe into a campaign directory before it runs (checked on resume)."""
    cdir = _run_dir(root, scen, label, seed)
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / RECIPE_FILE).write_text(recipe_hash + "\n")


def _finished_run(root: Path, scen: str, label: str, seed: int, recipe_hash: str) -> "Dict | None":
    """The complete campaign.json of a run directory made by ``recipe_hash`` (else an error), or None."""
    cdir = _run_dir(root, scen, label, seed)
    state = _complete_state(cdir / "campaign.json")
    if state is not None and (cdir / RECIPE_FILE).exists():  # older runs have no stamp
        _mismatch(cdir / "campaign.json", (cdir / RECIPE_FILE).read_text().strip(), recipe_hash)
    return state


def _kept(out: Path, scen: str, label: str, seed: int, recipe_hash: str) -> bool:
    path = _summary(out, scen, label, seed)
    state = _complete_state(path)
    if state is not None and RECIPE_KEY in state:  # older summaries have no recipe
        _mismatch(path, state[RECIPE_KEY], recipe_hash)
    return state is not None


def keep_summary(root: Path, out: Path, scen: str, label: str, seed: int, recipe_hash: str) -> None:
    """A finished campaign's campaign.json, with its recipe, kept under ``<output>/campaigns/``
    (small, committed)."""
    from al_lightning.campaign.outputs import write_json

    state = _finished_run(root, scen, label, seed, recipe_hash)
    if state is not None:
        dst = _summary(out, scen, label, seed)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_json(dst, {**state, RECIPE_KEY: recipe_hash})


def collect(cfg: StudyConfig, out: Path) -> Dict:
    """{scenario: {strategy: {seed: campaign state}}} of the completed campaigns' stored summaries."""
    runs: Dict = {}
    for scen, label, seed, _ in campaign_runs(cfg):
        state = _complete_state(_summary(out, scen, label, seed))
        if state is not None:
            runs.setdefault(scen, {}).setdefault(label, {})[seed] = state
    return runs


def auc(state: Dict, key: str) -> float:
    """The one AUC of every table (analysis.endpoint_auc's definition): the area under the learning
    curve over rounds 1..R divided by its label range (= the mean error over it; round 0 is shared by
    every arm of a seed). A campaign with fewer than two such rounds: its last value."""
    recs = [r for r in state["rounds"] if r["round"] >= 1] or state["rounds"][-1:]
    x = np.array([r["n_labeled"] for r in recs], float)
    y = np.array([r["metrics"].get(key, np.nan) for r in recs], float)
    if len(x) < 2:
        return float(y[-1])
    return mean_over_range(x, y)


def paired_interval(diffs: np.ndarray) -> tuple:
    """Mean paired difference and its 95% t-interval half width (nan for one seed)."""
    return float(np.mean(diffs)), t_half_width(diffs)


def summarise(cfg: StudyConfig, runs: Dict) -> Dict:
    """Per scenario / strategy / split / metric: final and AUC mean, std, paired diff to reference."""
    table: Dict = {}
    for scen, strategies in runs.items():
        ref = strategies.get(cfg.reference, {})
        for label, seeds in strategies.items():
            rows = table.setdefault(scen, {}).setdefault(label, {"seeds": sorted(seeds), "metrics": {}})
            rows["seconds"] = float(np.mean([sum(r.get("fit_seconds", 0) + r.get("acquire_seconds", 0)
                                                 for r in s["rounds"]) for s in seeds.values()]))
            rows["acquire_seconds"] = float(np.mean([sum(r.get("acquire_seconds", 0) for r in s["rounds"])
                                                     for s in seeds.values()]))
            keys = sorted({k for s in seeds.values() for k in s["rounds"][-1]["metrics"] if k.startswith("test")})
            for key in keys:
                for kind, fn in (("final", lambda s, k: s["rounds"][-1]["metrics"].get(k, np.nan)), ("auc", auc)):
                    vals = np.array([fn(seeds[sd], key) for sd in sorted(seeds)])
                    common = [sd for sd in sorted(seeds) if sd in ref]
                    diffs = np.array([fn(seeds[sd], key) - fn(ref[sd], key) for sd in common])
                    d, hw = paired_interval(diffs) if len(diffs) else (float("nan"), float("nan"))
                    rows["metrics"][f"{key}/{kind}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)),
                                                        "diff_to_ref": d, "diff_95": hw}
    return table


def cut_rounds(runs: Dict, rounds) -> Dict:
    """``runs`` with every campaign cut to rounds 0..``rounds`` (None: as they are), so that the
    tables compare every arm at the same labels although the reference ran longer (for savings)."""
    if rounds is None:
        return runs
    for scen, strategies in runs.items():
        for label, seeds in strategies.items():
            for seed, state in seeds.items():
                if max(r["round"] for r in state["rounds"]) < int(rounds):
                    raise ValueError(f"study: campaign {scen}/{label}/seed{seed} stops before round {rounds} "
                                     "(analysis.rounds); the tables would compare it at fewer labels")
    return {scen: {label: {seed: {**state, "rounds": [r for r in state["rounds"] if r["round"] <= int(rounds)]}
                           for seed, state in seeds.items()} for label, seeds in strategies.items()}
            for scen, strategies in runs.items()}


def write_results(cfg: StudyConfig, out: Path) -> None:
    """results.json, results.md and learning-curve PNGs under ``out``, from ``out/campaigns``."""
    from al_lightning.campaign.outputs import write_json

    runs = collect(cfg, out)
    table = summarise(cfg, cut_rounds(runs, cfg.analysis.get("rounds")))
    write_json(out / "results.json", {"study": cfg.name, "reference": cfg.reference, "table": table})
    atomic_write(out / "results.md", lambda fh: fh.write(results_markdown(cfg, table)))
    if cfg.analysis and "default" in runs:
        from al_lightning.campaign.study_report import analyse, markdown

        result = analyse(runs["default"], cfg.analysis, cfg.reference)
        write_json(out / "analysis.json", result)
        atomic_write(out / "analysis.md", lambda fh: fh.write(markdown(cfg.name, result)))
    from al_lightning.campaign.study_plots import plot_savings, plot_study_curves

    for scen, strategies in runs.items():
        plot_study_curves(strategies, out / f"curves_{scen}.png", cfg.name + (f" ({scen})" if scen != "default" else ""),
                          cfg.reference)
    if cfg.analysis and "default" in runs:
        plot_savings(runs["default"], cfg.analysis, cfg.reference, out / "savings_default.png", cfg.name)


def results_markdown(cfg: StudyConfig, table: Dict) -> str:
    cut = f"rounds 0..{cfg.analysis['rounds']} of every campaign (a longer reference is cut); " if cfg.analysis.get(
        "rounds") is not None else ""
    lines = [f"# Study `{cfg.name}`", "",
             f"{cut}mean ± std over each row's seeds (n: their number, of {cfg.seeds}); "
             f"Δ = paired difference to `{cfg.reference}` (same seed), "
             "± its 95% t-interval half width; negative Δ = lower error than the reference. "
             "AUC = mean error over the learning curve over rounds 1..R (the prespecified endpoint's definition, "
             "as in analysis.md); time = fit + acquisition of the rounds shown. Energies eV/atom, forces eV/Å.", ""]
    for scen, strategies in table.items():
        splits = sorted({k.split("/")[0] for s in strategies.values() for k in s["metrics"]})
        for metric in ("forces_mae", "energy_mae"):
            for kind in ("final", "auc"):
                lines += [f"## {scen}: {metric} ({kind})", "",
                          "| strategy | n | " + " | ".join(splits) + " | time (s) |", "|---|---|" + "---|" * (len(splits) + 1)]
                for label, rows in strategies.items():
                    cells = []
                    for split in splits:
                        m = rows["metrics"].get(f"{split}/{metric}/{kind}")
                        if m is None:
                            cells.append("–")
                            continue
                        cell = f"{m['mean']:.4f} ± {m['std']:.4f}"
                        if label != cfg.reference and np.isfinite(m["diff_to_ref"]):
                            cell += f" (Δ {m['diff_to_ref']:+.4f} ± {m['diff_95']:.4f})"
                        cells.append(cell)
                    lines.append(f"| {label} | {len(rows['seeds'])} | " + " | ".join(cells) + f" | {rows['seconds']:.0f} |")
                lines.append("")
    return "\n".join(lines)
