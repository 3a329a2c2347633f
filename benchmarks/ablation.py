"""Ablation stage 1 (docs/results/ablation/PROTOCOL.md): PV settings scored on cached features.

Needs the round-0 models of the tuning seeds (the protocol's ``rounds: 0`` campaigns in
logs/ablation/round0_seed<S>). Per seed: one feature pass of the pool and of the labeled set
per (parameter subset, sketch); then, on the cached rows, Spearman(PV, true force error) over
rel_lambda and the training-side rows, the trivial predictors beside it, and the batches that
(K, LCMD space) would select. Writes docs/results/ablation/stage1.json and stage1.md.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py [--seeds 0,1,2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "ablation"
DATA = dict(seed=1001, mode="trajectory",
            sizes={"pool": 2000, "initial": 30, "val": 30, "test_id": 60, "test_ood_ads": 60,
                   "test_ood_cat": 60, "test_ood_both": 60})
CONFIGS = [("readouts", None), ("readouts+products", 1024), ("interactions", 1024),
           ("all_linear", 512), ("all_linear", 1024), ("all_linear", 4096)]
LAMBDAS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
KS, B = [30, 120, 240, 480, 2000], 30
DEFAULT = {"config": "readouts", "train_rows": "probes", "rel_lambda": 1e-3}


def setup(seed: int):
    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.data.synthetic import EMTCatalysisSpec
    from al_lightning.model.module import MACEModule

    model = ROOT / "logs" / "ablation" / f"round0_seed{seed}" / "round_000" / "model.model"
    dm = ActiveDataModule(emt=EMTCatalysisSpec(**DATA), eval_batch_size=64, seed=seed)
    module = MACEModule(foundation=str(model), dtype="float32")
    dm.prepare_data()
    dm.setup("fit")
    module.build(dm)
    return module, dm


def context(module, dm, seed: int):
    from al_lightning.acquisition import AcquisitionContext

    return AcquisitionContext(module, dm, 0, seed, B, dm.candidate_ids())


def truth(ctx):
    """(per-structure force MAE, predicted max |F|, system key) of every pool frame."""
    from al_lightning import keys as K
    from al_lightning.acquisition.predict import predict_batches
    from al_lightning.data.batches import ShardBatches

    ds = ctx.datamodule.split_dataset("pool")  # the pool with its labels (offline benchmark)
    err, fmax = [], []
    for batch, out in predict_batches(ctx, ds, ShardBatches(np.arange(len(ds)), 64), None):
        f, g = out[K.OUT_FORCES], batch[K.BATCH]
        free = batch[K.FREE_MASK].to(f.dtype)  # free atoms only, as OracleScorer and split_calibration
        per = (f - batch[K.FORCES]).abs().mean(1) * free
        n = int(batch[K.NUM_ATOMS].numel())
        cnt = torch.zeros(n, dtype=per.dtype, device=per.device).index_add_(0, g, free)
        err.append((torch.zeros_like(cnt).index_add_(0, g, per) / cnt.clamp_min(1)).cpu())
        fmax.append(torch.zeros(n, dtype=f.dtype, device=f.device)
                    .index_reduce_(0, g, f.norm(dim=1) * free, "amax", include_self=False).cpu())
    pool = ctx.datamodule.structure_file("pool")
    keys = [str(pool.raw(i).info.get("system_key", i)) for i in range(len(pool))]
    return torch.cat(err).numpy(), torch.cat(fmax).numpy(), np.array(keys)


def rows(ctx, dataset, n: int, spec):
    from al_lightning.acquisition.predict import predict_batches
    from al_lightning.data.batches import ShardBatches

    parts = [(out.rows.detach(), out.lcmd.detach()) for _, out in
             predict_batches(ctx, dataset, ShardBatches(np.arange(n), 64), spec)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def feature_pass(ctx, preset: str, dim):
    """Cached rows of one configuration: pool (direction), train (probes 16 and direction)."""
    from al_lightning.features import NTKEnergyForce

    out = {}
    for name, mode in (("probes", "probes"), ("direction", "direction")):
        pool_spec = NTKEnergyForce(params=preset, sketch_dim=dim, train_force_mode=mode,
                                   train_probes=16).prepare(ctx.module.net)
        train_spec = pool_spec.training()
        ds = ctx.datamodule.labeled_dataset()
        out[f"train_{name}"], out["train_lcmd"] = rows(ctx, ds, len(ds), train_spec)
    t0 = time.perf_counter()
    ds = ctx.datamodule.pool_dataset()
    out["pool"], out["pool_lcmd"] = rows(ctx, ds, len(ds), pool_spec)
    out["pool_seconds_per_structure"] = (time.perf_counter() - t0) / len(ds)
    return out


def committee_scores(ctx):
    """committee_f disagreement of 3 members fitted as the main model (standalone, 20 epochs)."""
    from al_lightning.acquisition import CommitteeStrategy
    from al_lightning.acquisition.predict import predict_batches
    from al_lightning.data.batches import ShardBatches

    strategy = CommitteeStrategy(members=3, epochs=20)
    nets, _ = strategy.fit_members(ctx)
    ds = ctx.datamodule.pool_dataset()
    return torch.cat([strategy.scores(nets, b) for b, _ in
                      predict_batches(ctx, ds, ShardBatches(np.arange(len(ds)), 64), None)]).numpy()


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def batch_stats(ids, err, fmax, keys) -> dict:
    sel = np.asarray(ids)
    systems = keys[sel]
    return {"error_lift": float(err[sel].mean() / err.mean()), "fmax_ratio": float(fmax[sel].mean() / fmax.mean()),
            "systems": int(len(set(systems.tolist()))), "near_duplicates": float(1 - len(set(systems)) / len(sel))}


def select(scores, vec, centres, k: int) -> np.ndarray:
    """pv_lcmd on cached data: top-k by PV, then LCMD of B with the training centres."""
    from al_lightning.acquisition import StreamingTopK, select_lcmd_ids

    top = StreamingTopK(k)
    top.update(scores, torch.arange(len(scores)), vec)
    res = top.result()
    return select_lcmd_ids(res.ids, res.vectors, B, train=centres, on_exhausted="fill").numpy()


def batches(prec, feats, scores, err, fmax, keys, key: str) -> dict:
    out = {}
    for space in ("raw", "whitened"):
        vec = feats["pool_lcmd"] if space == "raw" else prec.whiten_vectors(feats["pool_lcmd"]).float()
        centres = feats["train_lcmd"] if space == "raw" else prec.whiten_vectors(feats["train_lcmd"]).float()
        for k in KS:
            ids = select(scores, vec, centres, min(k, len(err)))
            out[f"{key}/K{k}/{space}"] = batch_stats(ids, err, fmax, keys)
    return out


def evaluate_seed(seed: int, quick: bool) -> dict:
    from al_lightning.acquisition import build_precision, gram_partial

    module, dm = setup(seed)
    ctx = context(module, dm, seed)
    err, fmax, keys = truth(ctx)
    res = {"seed": seed, "pool_mean_error": float(err.mean()),
           "trivial": {"spearman_fmax_error": spearman(fmax, err)}}
    if not quick:
        res["trivial"]["spearman_committee_f_error"] = spearman(committee_scores(ctx), err)
    res["configs"] = {}
    for preset, dim in (CONFIGS[:2] if quick else CONFIGS):
        feats = feature_pass(ctx, preset, dim)
        name = f"{preset}" + (f"+sketch{dim}" if dim else "")
        entry = {"p": int(feats["pool"].shape[-1]), "pool_seconds_per_structure": feats["pool_seconds_per_structure"],
                 "rank": {}, "pv_fmax": {}, "batches": {}}
        for rows_name in ("probes", "direction"):
            gram = gram_partial(feats[f"train_{rows_name}"])
            for lam in LAMBDAS:
                prec = build_precision(gram, rel_lambda=lam)
                dtype = torch.float32 if prec.float32_error_bound(gram.gram) <= 1e-3 else torch.float64
                scores = prec.score(feats["pool"], dtype=dtype)
                pv = scores.numpy()
                key = f"{rows_name}/{lam:g}"
                entry["rank"][key], entry["pv_fmax"][key] = spearman(pv, err), spearman(pv, fmax)
                if lam in (1e-3, 1e-2, 1e-1):
                    entry["batches"].update(batches(prec, feats, scores, err, fmax, keys, key))
        res["configs"][name] = entry
        print(json.dumps({"seed": seed, "config": name, "best_rank": max(entry["rank"].values())}), flush=True)
    return res


def _mean_sd(values):
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def decide(per_seed: list) -> dict:
    """The protocol's decision rule on the per-seed results (PROTOCOL.md, stage 1)."""
    configs = list(per_seed[0]["configs"])
    rank = {(c, k): _mean_sd([s["configs"][c]["rank"][k] for s in per_seed])[0]
            for c in configs for k in per_seed[0]["configs"][c]["rank"]}
    fmax = _mean_sd([s["trivial"]["spearman_fmax_error"] for s in per_seed])[0]
    cost = {c: per_seed[0]["configs"][c]["pool_seconds_per_structure"] for c in configs}
    best = max(rank.values())
    tied = [ck for ck, v in rank.items() if v >= best - 0.02]
    winner = min(tied, key=lambda ck: (cost[ck[0]], -rank[ck]))
    lam_keys = [k for k in per_seed[0]["configs"][winner[0]]["batches"] if k.startswith(winner[1] + "/")]
    if not lam_keys:  # the winning λ has no batch grid: the nearest λ that has one
        rows, lam = winner[1].split("/")
        grid = sorted({k.split("/")[1] for k in per_seed[0]["configs"][winner[0]]["batches"]}, key=float)
        near = min(grid, key=lambda g: abs(np.log10(float(g)) - np.log10(float(lam))))
        lam_keys = [k for k in per_seed[0]["configs"][winner[0]]["batches"] if k.startswith(f"{rows}/{near}/")]

    def batch_mean(c, k, field):
        return _mean_sd([s["configs"][c]["batches"][k][field] for s in per_seed])[0]

    covering = [k for k in lam_keys if batch_mean(winner[0], k, "systems") >= 25] or lam_keys
    sel = max(covering, key=lambda k: batch_mean(winner[0], k, "error_lift"))
    other = max((ck for ck in rank if ck[0].split("+")[0] != winner[0].split("+")[0]), key=lambda ck: rank[ck])
    return {"winner": {"config": winner[0], "rows_lambda": winner[1], "rank_spearman": rank[winner],
                       "selection": sel, "error_lift": batch_mean(winner[0], sel, "error_lift"),
                       "systems": batch_mean(winner[0], sel, "systems")},
            "beats_fmax": rank[winner] > fmax, "spearman_fmax_error": fmax,
            "runner_up_other_subset": {"config": other[0], "rows_lambda": other[1], "rank_spearman": rank[other]}}


def report(per_seed: list) -> str:
    """stage1.md: the rank table, the trivial predictors, the batch table, the decision."""
    seeds = [s["seed"] for s in per_seed]
    lines = ["# Ablation stage 1 — PV ranking and batches on cached features", "",
             f"Tuning benchmark of PROTOCOL.md (data seed 1001, pool 2000, round-0 models of seeds {seeds}); "
             "mean ± sd over seeds. Generated by `benchmarks/ablation.py --report` from the per-seed JSON.", "",
             "## Trivial predictors of the same per-structure force errors", "",
             "| predictor | Spearman with the true force error |", "|---|---|"]
    for key, label in (("spearman_fmax_error", "predicted max \|F\|"),
                       ("spearman_committee_f_error", "committee_f disagreement (3 members)")):
        if all(key in s["trivial"] for s in per_seed):
            m, sd = _mean_sd([s["trivial"][key] for s in per_seed])
            lines.append(f"| {label} | {m:.3f} ± {sd:.3f} |")
    lines += ["", "## Spearman(PV, force error) by configuration, training rows and rel_lambda", "",
              "| configuration | p | s/structure (pool) | train rows | " + " | ".join(f"λ {lam:g}" for lam in LAMBDAS)
              + " | Spearman(PV, max\|F\|) at λ 1e-3 |", "|---|---|---|---|" + "---|" * len(LAMBDAS) + "---|"]
    for c, e in per_seed[0]["configs"].items():
        for rows_name in ("probes", "direction"):
            cells = []
            for lam in LAMBDAS:
                m, sd = _mean_sd([s["configs"][c]["rank"][f"{rows_name}/{lam:g}"] for s in per_seed])
                cells.append(f"{m:.3f} ± {sd:.3f}")
            pf, _ = _mean_sd([s["configs"][c]["pv_fmax"][f"{rows_name}/0.001"] for s in per_seed])
            lines.append(f"| {c} | {e['p']} | {e['pool_seconds_per_structure'] * 1e3:.1f} ms | {rows_name} | "
                         + " | ".join(cells) + f" | {pf:.3f} |")
    d = decide(per_seed)
    w = d["winner"]
    lines += ["", f"## Batches of B = {B} (configuration {w['config']}, {w['rows_lambda'].split('/')[0]} rows)", "",
              "| λ / K / LCMD space | error lift | max\|F\| ratio | systems | near-duplicates |", "|---|---|---|---|---|"]
    rows_name = w["rows_lambda"].split("/")[0]
    for k in per_seed[0]["configs"][w["config"]]["batches"]:
        if k.startswith(rows_name + "/"):
            vals = [_mean_sd([s["configs"][w["config"]]["batches"][k][f] for s in per_seed])[0]
                    for f in ("error_lift", "fmax_ratio", "systems", "near_duplicates")]
            lines.append(f"| {k.split('/', 1)[1]} | {vals[0]:.2f} | {vals[1]:.2f} | {vals[2]:.1f} | {vals[3]:.2f} |")
    lines += ["", "## Decision (the protocol's rule)", "",
              f"- stage-1 winner: **{w['config']}**, {w['rows_lambda']} (rows / rel_lambda), mean Spearman "
              f"{w['rank_spearman']:.3f}; selection {w['selection']}: error lift {w['error_lift']:.2f}, "
              f"{w['systems']:.1f} systems.",
              f"- beats the predicted force norm (Spearman {d['spearman_fmax_error']:.3f}): **{d['beats_fmax']}**.",
              f"- best of another parameter subset: {d['runner_up_other_subset']['config']}, "
              f"{d['runner_up_other_subset']['rows_lambda']}, Spearman {d['runner_up_other_subset']['rank_spearman']:.3f}.",
              f"- today's defaults: {DEFAULT['config']}, {DEFAULT['train_rows']}/{DEFAULT['rel_lambda']:g}."]
    return "\n".join(lines) + "\n"


FINALISTS = {  # docs/results/ablation/PROTOCOL.md, amendment 1 (strategy_kwargs of configs/ablation_stage2.yaml)
    "A_products_s1024": {"feature_kind": "ntk_ef", "params": "readouts+products", "sketch_dim": 1024, "rel_lambda": 0.1,
                         "shortlist": 0.06, "lcmd_space": "whitened"},
    "B_all_linear_s512": {"feature_kind": "ntk_ef", "params": "all_linear", "sketch_dim": 512, "rel_lambda": 0.1,
                          "shortlist": 0.06, "lcmd_space": "raw"},
    "C_defaults": {"feature_kind": "ntk_ef", "params": "readouts", "rel_lambda": 0.001, "shortlist": 240,
                   "lcmd_space": "raw"},
}


def stage2() -> str:
    """stage2.md + chosen.json from the stage-2 campaign summaries (the protocol's stage-2 rule)."""
    from al_lightning.campaign.analysis import OOD_SPLITS, endpoint_auc, paired_test

    base = OUT / "stage2" / "campaigns" / "default"
    runs = {a.name: {int(f.stem[4:]): json.loads(f.read_text()) for f in sorted(a.glob("seed*.json"))}
            for a in sorted(base.iterdir())}
    rows, score = [], {}
    lines = ["# Ablation stage 2 — finalists as full campaigns (tuning benchmark, seeds 0-2)", "",
             "Force-MAE AUC over rounds 1..3 (eV/Å); Δ = arm − random, paired by seed, ± 95 % t half-width "
             "(2 degrees of freedom: a guard, not a test). Generated by `benchmarks/ablation.py --stage2`.", "",
             "| arm | AUC test_id | Δ test_id | AUC OOD pooled | Δ OOD pooled | mean of the two AUCs | s / campaign |",
             "|---|---|---|---|---|---|---|"]
    for arm, seeds in runs.items():
        ids, ood = ([endpoint_auc(seeds[k], sp, 3) for k in sorted(seeds)] for sp in (["test_id"], OOD_SPLITS))
        cells = []
        for vals, sp in ((ids, ["test_id"]), (ood, OOD_SPLITS)):
            ref = [endpoint_auc(runs["random"][k], sp, 3) for k in sorted(seeds)]
            d = paired_test(np.array(vals) - np.array(ref)) if arm != "random" else None
            cells += [f"{np.mean(vals):.4f}", f"{d['mean']:+.4f} ± {d['ci95']:.4f}" if d else "–"]
        secs = np.mean([sum(r["fit_seconds"] + r["acquire_seconds"] for r in st["rounds"]) for st in seeds.values()])
        score[arm] = (np.mean(ids) + np.mean(ood)) / 2
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {score[arm]:.4f} | {secs:.0f} |")
    finalists = [a for a in runs if a in FINALISTS]
    best = min(finalists, key=lambda a: score[a])
    ids_c = [endpoint_auc(runs["C_defaults"][k], ["test_id"], 3) for k in sorted(runs["C_defaults"])]
    ood_c = [endpoint_auc(runs["C_defaults"][k], OOD_SPLITS, 3) for k in sorted(runs["C_defaults"])]
    beats = best != "C_defaults" and all(
        np.mean([endpoint_auc(runs[best][k], sp, 3) for k in sorted(runs[best])]) < np.mean(c)
        for sp, c in ((["test_id"], ids_c), (OOD_SPLITS, ood_c)))
    chosen = best if beats else "C_defaults"
    lines += ["", f"Lowest mean of the two AUCs among the finalists: **{best}**. It "
              + ("beats" if beats else "does not beat") + " today's defaults on both endpoints, so `pv_lcmd`'s "
              f"defaults become **{chosen}**: `{FINALISTS[chosen]}`."]
    (OUT / "chosen.json").write_text(json.dumps({"arm": chosen, "init_args": FINALISTS[chosen]}, indent=1) + "\n")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--quick", action="store_true", help="two configurations, no committee (smoke run)")
    ap.add_argument("--report", action="store_true", help="only rebuild stage1.md / stage1.json from the seed files")
    ap.add_argument("--stage2", action="store_true", help="stage2.md and chosen.json from the stage-2 campaigns")
    args = ap.parse_args()
    if args.stage2:
        (OUT / "stage2.md").write_text(stage2())
        print((OUT / "stage2.md").read_text())
        return
    if args.report:
        per_seed = [json.loads((OUT / f"stage1_seed{s}.json").read_text()) for s in args.seeds.split(",")]
        (OUT / "stage1.md").write_text(report(per_seed))
        (OUT / "stage1.json").write_text(json.dumps(decide(per_seed), indent=1) + "\n")
        print((OUT / "stage1.md").read_text())
        return
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    done = {}
    for s in [int(x) for x in args.seeds.split(",")]:
        part = OUT / f"stage1_seed{s}.json"
        if part.exists() and not args.quick:  # resumable: one file per finished seed
            done[s] = json.loads(part.read_text())
            continue
        done[s] = evaluate_seed(s, args.quick)
        if not args.quick:
            part.write_text(json.dumps(done[s], indent=1) + "\n")
    print(json.dumps({"seeds": sorted(done)}))


if __name__ == "__main__":
    main()
