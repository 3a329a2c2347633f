"""GPU acquisition benchmark (docs/design.md §10; issue 5 item 8, issue 28 item 5); prints JSON.

One script, inside 10 minutes on one GPU, writing ``--out`` (JSON) as each part finishes:

1. ``real_path``: the production path of benchmarks/bench_scale.py (pool file → graphs → NTK-EF
   features with the shipped EMT backbone → PV → top-K → LCMD, K 1,000, B 100) on a 20k pool on the
   device, with its E+F inference pass; extrapolated to 200k as 10 × the pool phase plus the
   full-size PV + top-K + LCMD below.
2. ``selection_200k``: PV scoring of 200k synthetic rows of the real feature width against a float64
   factor, the running top-K on the device, LCMD of B = 1,250 from K = 50,000.
3. ``features``: NTK-EF (direction, readouts) rows of ~80-atom slabs with a MACE-medium-sized model.
4. ``mp0_medium``: every parameter preset of benchmarks/bench_features.py on MACE-MP-0 medium's
   architecture (4.7M parameters, random weights), with peak device memory per batch.

    python benchmarks/gpu_acquisition.py --device cuda            # full size (H100: a few minutes)
    python benchmarks/gpu_acquisition.py --device cpu --quick     # smoke run of the script itself

Rows are labeled with the device they ran on; a CPU run is not a GPU number. The device machine
lacks mace-torch / ASE / matscipy: install cp312 wheels there first (docs/results/bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import al_lightning  # noqa: E402,F401  (mace before e3nn)
from bench_acquisition import chunks, precision  # noqa: E402
from bench_features import build_model, make_batch, run_model, slabs, sync  # noqa: E402

from al_lightning.features import NTKEnergyForce  # noqa: E402

FULL = dict(structures=20_000, pool=200_000, p=1024, k=50_000, b=1250, batch=32, n_train=2000, chunk=8192,
            model=dict(hidden="128x0e+128x1o", max_ell=3, correlation=3, r_max=6.0, mlp="16x0e", radial=[64, 64, 64]))
QUICK = dict(structures=16, pool=20_000, p=128, k=2000, b=50, batch=4, n_train=200, chunk=4096,
             model=dict(hidden="8x0e+8x1o", max_ell=1, correlation=2, r_max=4.0, mlp="8x0e", radial=[16, 16]))


def bench_features(cfg: dict, device: str) -> dict:
    """Seconds per structure of NTK-EF (direction) pool rows; batches are built once up front."""
    model = build_model(**cfg["model"]).to(device)
    features = NTKEnergyForce(params="readouts", force_mode="direction", sketch_dim=None).prepare(model)
    n_unique = min(cfg["structures"], 256)  # distinct slabs, reused: graph building is not timed
    batches = [make_batch(slabs(cfg["batch"], seed=s), cfg["model"]["r_max"], device)
               for s in range(max(1, n_unique // cfg["batch"]))]
    features.rows(model, batches[0])  # warm-up (kernels, caches)
    sync(device)
    n_batches = max(1, cfg["structures"] // cfg["batch"])
    t0 = time.perf_counter()
    for i in range(n_batches):
        rows = features.rows(model, batches[i % len(batches)])
    sync(device)
    dt = time.perf_counter() - t0
    return {"structures": n_batches * cfg["batch"], "seconds": dt, "s_per_structure": dt / (n_batches * cfg["batch"]),
            "p": int(rows.rows.shape[-1]), "rows_per_structure": int(rows.rows.shape[1])}


def bench_pv_lcmd(cfg: dict, device: str) -> dict:
    """The engine's own path on synthetic rows: PVScorer (float64 factor, float32 solves when the
    bound allows) → StreamingTopK on the device → merged_shortlist → LCMD of B (scorer.choose)."""
    from al_lightning.acquisition import AcquisitionContext, PVStrategy, ShortlistLCMD, gram_partial
    from al_lightning.acquisition.callback import merged_shortlist
    from al_lightning.acquisition.pv import PVScorer
    from al_lightning.acquisition.topk import StreamingTopK
    from al_lightning.features import PoolRows

    prec = precision(cfg["p"], cfg["n_train"], cfg["chunk"]).to(device)
    train = next(chunks(cfg["n_train"], cfg["p"], cfg["n_train"], seed=7))[1].double()
    gram = gram_partial(train)
    bound = prec.float32_error_bound(gram.gram.to(device))
    strategy = PVStrategy(selector=ShortlistLCMD(cfg["k"]), calibration=False)
    scorer = PVScorer(strategy, None, cfg["k"], prec, train.to(device), gram,
                      torch.float32 if bound <= 1e-3 else torch.float64, bound, 0.0)
    ctx = AcquisitionContext(None, None, 0, 0, cfg["b"], None, device=torch.device(device))
    top, spent = StreamingTopK(cfg["k"], vector_dtype=torch.float32), 0.0
    for ids, rows, vecs in chunks(cfg["pool"], cfg["p"], cfg["chunk"], seed=1):
        rows, vecs, ids = rows.to(device), vecs.to(device), ids.to(device)  # generation and copy not timed
        sync(device)
        t0 = time.perf_counter()
        top.update(*scorer.score(None, PoolRows(ids, rows, vecs, None, None)))
        sync(device)
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    merged = merged_shortlist(ctx, top.result(), cfg["k"])
    picks = scorer.choose(merged, cfg["b"])
    sync(device)
    return {"pv_seconds": spent, "lcmd_seconds": time.perf_counter() - t0, "picked": int(len(picks)),
            "float32_scoring": scorer.score_dtype == torch.float32, "float32_error_bound": bound}


def real_path(n: int, device: str, pool: int, sel: dict) -> dict:
    """bench_scale's production path on the device at n, extrapolated to ``pool`` structures."""
    from bench_scale import child_scale

    row = child_scale(n, 1000, 100, "yes", device)
    s = row["seconds"]
    scale = pool / n
    row["extrapolated_to"] = pool
    row["extrapolated_seconds"] = (s["index"] + s["pool_phase"] - s["pv"] - s["topk"]) * scale + s["training_side"] \
        + sel["pv_seconds"] + sel["lcmd_seconds"]
    row["extrapolated_inference_seconds"] = s["inference"] * scale
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the script, not the speed")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--out", default="gpu_acquisition.json")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip (real_path, mp0_medium)")
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{args.device} (not a GPU number)"
    out = {"device": name, "sizes": {k: v for k, v in cfg.items() if k != "model"}, "model": cfg["model"]}

    def save(key, value):
        out[key] = value
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    torch.set_default_dtype(getattr(torch, args.dtype))
    save("selection_200k", bench_pv_lcmd(cfg, args.device))
    feats = bench_features(cfg, args.device)
    full_features = feats["s_per_structure"] * cfg["pool"]
    total = full_features + out["selection_200k"]["pv_seconds"] + out["selection_200k"]["lcmd_seconds"]
    save("features", {**feats, "extrapolated_pool_features_seconds": full_features,
                      "extrapolated_total_seconds": total, "target_seconds": 600, "target_met": total < 600})
    if "real_path" not in args.skip:
        save("real_path", real_path(500 if args.quick else 20_000, args.device, cfg["pool"], out["selection_200k"]))
    if "mp0_medium" not in args.skip:
        torch.set_default_dtype(getattr(torch, args.dtype))
        save("mp0_medium", run_model("mp0_medium" if not args.quick else "tiny", 2, 3, args.device,
                                     getattr(torch, args.dtype)))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
