"""GPU acquisition benchmark (docs/design.md §10, issue 5 item 8); prints JSON.

Measures, on one device: NTK-EF pool features (energy row + force-direction row, readouts)
of ``--structures`` ~80-atom slabs with a MACE-medium-sized model (128x0e+128x1o); PV
scoring of ``--pool`` synthetic feature rows of width p against a float64 precision, with a
running top-K; LCMD of B from the K shortlist. Extrapolates the feature time linearly to
the full pool and reports the total, the target being < 10 minutes for 200k structures.

    python benchmarks/gpu_acquisition.py --device cuda            # full size (H100: a few minutes)
    python benchmarks/gpu_acquisition.py --device cpu --quick     # smoke run of the script itself

The device machine lacks mace-torch / ASE / matscipy: install cp312 wheels there first.
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
from bench_features import build_model, make_batch, slabs, sync  # noqa: E402

from al_lightning.acquisition import score_pool, select_lcmd  # noqa: E402
from al_lightning.features import FeatureSpec, pool_step, resolve_params  # noqa: E402

FULL = dict(structures=20_000, pool=200_000, p=1024, k=50_000, b=1250, batch=32, n_train=2000, chunk=8192,
            model=dict(hidden="128x0e+128x1o", max_ell=3, correlation=3, r_max=6.0, mlp="16x0e", radial=[64, 64, 64]))
QUICK = dict(structures=16, pool=20_000, p=128, k=2000, b=50, batch=4, n_train=200, chunk=4096,
             model=dict(hidden="8x0e+8x1o", max_ell=1, correlation=2, r_max=4.0, mlp="8x0e", radial=[16, 16]))


def bench_features(cfg: dict, device: str) -> dict:
    """Seconds per structure of NTK-EF (direction) pool rows; batches are built once up front."""
    model = build_model(**cfg["model"]).to(device)
    spec = FeatureSpec(kind="ntk_ef", params=resolve_params(model, "readouts"), force_mode="direction")
    n_unique = min(cfg["structures"], 256)  # distinct slabs, reused: graph building is not timed
    batches = [make_batch(slabs(cfg["batch"], seed=s), cfg["model"]["r_max"], device)
               for s in range(max(1, n_unique // cfg["batch"]))]
    pool_step(model, batches[0], spec)  # warm-up (kernels, caches)
    sync(device)
    n_batches = max(1, cfg["structures"] // cfg["batch"])
    t0 = time.perf_counter()
    for i in range(n_batches):
        rows = pool_step(model, batches[i % len(batches)], spec)
    sync(device)
    dt = time.perf_counter() - t0
    return {"structures": n_batches * cfg["batch"], "seconds": dt, "s_per_structure": dt / (n_batches * cfg["batch"]),
            "p": int(rows.rows.shape[-1]), "rows_per_structure": int(rows.rows.shape[1])}


def bench_pv_lcmd(cfg: dict, device: str) -> dict:
    """PV over the full synthetic pool with a running top-K, then LCMD of B from K."""
    prec = precision(cfg["p"], cfg["n_train"], cfg["chunk"])
    prec = type(prec)(chol=prec.chol.to(device), lam=prec.lam, n_rows=prec.n_rows, trace=prec.trace)

    def on_device():
        for ids, rows, vecs in chunks(cfg["pool"], cfg["p"], cfg["chunk"], seed=1):
            yield ids, rows.to(device), vecs.to(device)

    sync(device)
    t0 = time.perf_counter()
    top = score_pool(on_device(), prec, cfg["k"], vector_dtype=torch.float32)
    sync(device)
    t_pv = time.perf_counter() - t0
    t0 = time.perf_counter()
    picks = select_lcmd(top.vectors.to(device), cfg["b"])
    sync(device)
    return {"pv_seconds": t_pv, "lcmd_seconds": time.perf_counter() - t0, "picked": int(picks.numel())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the script, not the speed")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    torch.set_default_dtype(getattr(torch, args.dtype))
    cfg = QUICK if args.quick else FULL
    feats = bench_features(cfg, args.device)
    sel = bench_pv_lcmd(cfg, args.device)
    full_features = feats["s_per_structure"] * cfg["pool"]
    total = full_features + sel["pv_seconds"] + sel["lcmd_seconds"]
    out = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
           "sizes": {k: v for k, v in cfg.items() if k != "model"}, "model": cfg["model"], "features": feats,
           "selection": sel, "extrapolated_pool_features_seconds": full_features,
           "extrapolated_total_seconds": total, "target_seconds": 600, "target_met": total < 600}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
