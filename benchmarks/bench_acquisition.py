"""Acquisition maths benchmark (docs/design.md §10): PV scoring, pool-pass memory, LCMD.

Prints one JSON object. Synthetic float32 features with a power-law spectrum
(column j scaled by (1+j)^-1/2, like NTK features), float64 Λ. Sections:
  pv      PV of n_pool × p features (chunked; float64 solve, and the float32-solve option)
          vs a plain n_pool×p×p matmul (float64 incl. the cast, and float32) on the same
          chunks; generation time excluded.
  memory  peak RSS of the full streaming pass (generator → PV → top-K) for a small and a
          10× larger pool, each in its own subprocess.
  lcmd    LCMD K × B at several p, and the time ratios when K or B doubles.
Usage: python benchmarks/bench_acquisition.py [--quick] [--threads N] [--only pv,memory,lcmd]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Iterator

import torch

from al_lightning.acquisition import PVStrategy, ShortlistLCMD, StreamingTopK, build_precision, gram_partial, select_lcmd
from al_lightning.acquisition.distributed import Comm, ordered_sum
from al_lightning.acquisition.pv import PVScorer
from al_lightning.features import PoolRows

FULL = dict(pool=200_000, p=1024, n_train=2000, chunk=8192, k=10_000, mem_small=20_000,
            lcmd_k=50_000, lcmd_b=1250, lcmd_p=[1024, 2048], lcmd_train=500)
QUICK = dict(pool=20_000, p=256, n_train=500, chunk=4096, k=2000, mem_small=4000,
             lcmd_k=5000, lcmd_b=125, lcmd_p=[256, 512], lcmd_train=100)


def features(n: int, p: int, seed: int, isotropic: bool = False) -> torch.Tensor:
    """(n, p) float32 synthetic features, power-law column scales unless isotropic."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g)
    if not isotropic:
        x *= torch.arange(1, p + 1, dtype=torch.float32).rsqrt()
    return x


def chunks(n: int, p: int, chunk: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Pool generator: (ids, rows (m, p), lcmd vectors (m, p)) per chunk of consecutive ids."""
    for c, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        rows = features(m, p, seed * 100_003 + c)
        yield torch.arange(start, start + m), rows, rows


def precision(p: int, n_train: int, chunk: int):
    starts = list(range(0, n_train, chunk))  # the production Gram sum (batch-ordered partials)
    total = ordered_sum(Comm(), len(starts), lambda b: gram_partial(features(min(chunk, n_train - starts[b]), p, 7 + b)))
    return build_precision(total)


def stream_pool(prec, pool, k: int):
    """The engine's pool-side scoring (PVScorer.score → StreamingTopK) over (ids, rows, vectors) chunks;
    keeps no chunk once the next is requested."""
    strategy = PVStrategy(selector=ShortlistLCMD(k), lcmd_space="raw", calibration=False)
    scorer = PVScorer(strategy, None, k, prec, None, None, torch.float64, 0.0, 0.0)
    top = StreamingTopK(k, vector_dtype=torch.float32)
    for ids, rows, vectors in pool:
        top.update(*scorer.score(None, PoolRows(ids, rows, vectors, None, None)))
        del ids, rows, vectors
    return top.result()


def bench_pv(cfg: dict) -> dict:
    """Time PV scoring vs plain matmuls of the same shape, chunk by chunk."""
    p = cfg["p"]
    t0 = time.perf_counter()
    prec = precision(p, cfg["n_train"], cfg["chunk"])
    t_prec = time.perf_counter() - t0
    w64 = torch.randn(p, p, dtype=torch.float64)
    w32 = w64.float()
    t = dict(pv=0.0, pv32=0.0, mm64=0.0, mm32=0.0)
    for _, rows, _ in chunks(cfg["pool"], p, cfg["chunk"], seed=1):
        s = time.perf_counter()
        prec.score(rows)
        t["pv"] += time.perf_counter() - s
        s = time.perf_counter()
        prec.score(rows, dtype=torch.float32)
        t["pv32"] += time.perf_counter() - s
        s = time.perf_counter()
        rows.to(torch.float64) @ w64
        t["mm64"] += time.perf_counter() - s
        s = time.perf_counter()
        rows @ w32
        t["mm32"] += time.perf_counter() - s
    return dict(n_pool=cfg["pool"], p=p, n_train_rows=cfg["n_train"], precision_s=round(t_prec, 3),
                pv_s=round(t["pv"], 3), matmul_f64_s=round(t["mm64"], 3),
                matmul_f32_s=round(t["mm32"], 3),
                ratio_vs_matmul_f64=round(t["pv"] / t["mm64"], 3),
                ratio_vs_matmul_f32=round(t["pv"] / t["mm32"], 3),
                pv_f32_solve_s=round(t["pv32"], 3),
                ratio_f32_solve_vs_matmul_f32=round(t["pv32"] / t["mm32"], 3), target_ratio=2.0)


def _rss_mib(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(n_pool: int, cfg: dict) -> dict:
    """Run in a subprocess: the full streaming pass. Peak RSS in MiB: of the whole process
    (ru_maxrss) and of the pass alone (VmHWM reset via /proc/self/clear_refs)."""
    prec = precision(cfg["p"], cfg["n_train"], cfg["chunk"])
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak-RSS mark: what follows is the pass alone
    base = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    top = stream_pool(prec, chunks(n_pool, cfg["p"], cfg["chunk"], seed=2), cfg["k"])
    secs = time.perf_counter() - t0
    return dict(n_pool=n_pool, k=len(top), rss_before_pass_mib=round(base, 1),
                pass_peak_mib=round(_rss_mib("VmHWM"), 1),
                process_peak_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                pass_s=round(secs, 2))


def bench_memory(cfg: dict, threads: int) -> dict:
    out = {}
    for n in (cfg["mem_small"], cfg["pool"]):
        cmd = [sys.executable, __file__, "--_rss-child", str(n), "--threads", str(threads),
               "--cfg", json.dumps(cfg)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[str(n)] = json.loads(res.stdout.strip().splitlines()[-1])
    small, big = out[str(cfg["mem_small"])], out[str(cfg["pool"])]
    inc_s = small["pass_peak_mib"] - small["rss_before_pass_mib"]
    inc_b = big["pass_peak_mib"] - big["rss_before_pass_mib"]
    return dict(p=cfg["p"], k=cfg["k"], chunk=cfg["chunk"], runs=out,
                process_peak_ratio=round(big["process_peak_mib"] / small["process_peak_mib"], 3),
                pass_peak_ratio=round(big["pass_peak_mib"] / small["pass_peak_mib"], 3),
                pass_increment_ratio=round(inc_b / max(inc_s, 1e-9), 3), target_ratio=1.2)


def time_lcmd(k: int, b: int, p: int, n_train: int, isotropic: bool = False) -> dict:
    pool = features(k, p, 11, isotropic)
    train = features(n_train, p, 12, isotropic) if n_train else None
    stats: dict = {}
    t0 = time.perf_counter()
    sel = select_lcmd(pool, b, train, stats=stats)
    secs = time.perf_counter() - t0
    return dict(k=k, b=b, p=p, n_train=n_train, isotropic=isotropic, seconds=round(secs, 2),
                n_selected=int(sel.numel()), **stats)


def bench_lcmd(cfg: dict) -> dict:
    k, b, nt = cfg["lcmd_k"], cfg["lcmd_b"], cfg["lcmd_train"]
    runs = [time_lcmd(k, b, p, nt) for p in cfg["lcmd_p"]]
    p0 = cfg["lcmd_p"][0]
    base = runs[0]
    iso = time_lcmd(k, b, p0, nt, isotropic=True)
    k2 = time_lcmd(2 * k, b, p0, nt)
    b2 = time_lcmd(k, 2 * b, p0, nt)
    return dict(runs=runs, isotropic=iso, double_k=k2, double_b=b2,
                ratio_double_k=round(k2["seconds"] / base["seconds"], 3),
                ratio_double_b=round(b2["seconds"] / base["seconds"], 3),
                target_seconds_at_p1024=20.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads (1 is robust on a shared 2-core machine)")
    ap.add_argument("--only", default="pv,memory,lcmd", help="comma-separated sections")
    ap.add_argument("--cfg", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_rss-child", dest="rss_child", type=int, default=None, help=argparse.SUPPRESS)
    for key, val in FULL.items():
        kind = (lambda s: [int(v) for v in s.split(",")]) if isinstance(val, list) else int
        ap.add_argument("--" + key.replace("_", "-"), type=kind, default=None,
                        help=f"default {val} (--quick: {QUICK[key]})")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.loads(args.cfg) if args.cfg else dict(QUICK if args.quick else FULL)
    for key in FULL:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, cfg)))
        return
    out: dict = dict(threads=args.threads, torch=torch.__version__, cpu_count=os.cpu_count(),
                     loadavg_start=os.getloadavg()[0], quick=args.quick)
    sections = set(args.only.split(","))
    if "pv" in sections:
        out["pv"] = bench_pv(cfg)
    if "memory" in sections:
        out["memory"] = bench_memory(cfg, args.threads)
    if "lcmd" in sections:
        out["lcmd"] = bench_lcmd(cfg)
    out["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
