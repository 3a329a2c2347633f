"""The real acquisition path at 2k, 20k and 200k candidates (issue 28 item 1).

Writes ``docs/results/bench/end_to_end_200k.json`` (one row per run, written as each finishes: an
interrupted run keeps its rows) and prints it. Every row runs in its own process (peak RSS = that
process's maximum resident set), one BLAS thread.

Per row: the pool file's byte-offset index built from scratch (``index``); one loading-only pass
(files → graphs → batches, ``loading``); one energy+forces ``predict_step`` pass over the same
batches (``inference``, the yardstick); then the production ``select(PVStrategy(pv_lcmd, ntk_ef),
ctx)`` with the shipped EMT backbone and the default pool batching (64 structures' worth of atoms),
with the pass checkpointing every 5 minutes as a campaign does — split into training side, features
(pool phase − PV − top-K − loading), PV (solve + whitening), top-K updates and LCMD.
K = 1,000 and B = 100 at every size; ``--paper`` adds the paper's K = 50,000, B = 1,250 at the
largest size (selection only).

Pools: unlabeled copies of the demo's 800 trajectory frames (13–20 atoms) with N(0, 0.03 Å)
displacements (distinct coordinates, tiled from 800 frames), cached under $AL_LIGHTNING_CACHE/bench.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--sizes 2000,20000,200000] [--paper]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_end_to_end import ROOT, datamodule, peak_rss_mb, pool_file, run_child  # noqa: E402

OUT = ROOT / "docs" / "results" / "bench" / "end_to_end_200k.json"


def _timed(cls, name: str, spent: dict, key: str):
    """Wrap ``cls.name`` so its seconds add up in ``spent[key]``."""
    real = getattr(cls, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - t

    setattr(cls, name, wrapper)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _inference_seconds(module, dm, sampler, device: str = "cpu") -> float:
    import torch

    from al_lightning.acquisition.predict import predict_batches
    from al_lightning.acquisition.strategies import AcquisitionContext
    from al_lightning.model.mace import on_device

    ctx = AcquisitionContext(module, dm, 0, 0, 1, None, device=torch.device(device))
    with on_device(module.net, ctx.device):
        t0 = time.perf_counter()
        for _ in predict_batches(ctx, dm.pool_dataset(), sampler, None):
            pass
        _sync(device)
        return time.perf_counter() - t0


def _loading_seconds(dm, sampler) -> float:
    t0 = time.perf_counter()
    for _ in dm.batch_loader(dm.pool_dataset(), sampler):
        pass
    return time.perf_counter() - t0


def child_scale(n: int, k: int, b: int, yardsticks: str = "yes", device: str = "cpu") -> dict:
    import torch

    from al_lightning.acquisition import AcquisitionContext, PVStrategy, ShortlistLCMD, select
    from al_lightning.acquisition.callback import pool_sampler
    from al_lightning.acquisition.pass_state import PassCheckpoint
    from al_lightning.acquisition.pv import PVScorer
    from al_lightning.acquisition.topk import StreamingTopK
    from al_lightning.data import io

    path = pool_file(n)
    io._index_cache_path(path).unlink(missing_ok=True)
    t0 = time.perf_counter()
    io.extxyz_index(path)
    row = {"n": n, "K": k, "B": b, "kind": "ntk_ef", "device": device, "seconds": {"index": time.perf_counter() - t0}}
    module, dm = datamodule(n)
    strategy = PVStrategy(features="ntk_ef", selector=ShortlistLCMD(k), calibration=False)
    ctx = AcquisitionContext(module, dm, 0, 0, b, dm.candidate_ids(), device=torch.device(device))
    scorer_like = type("S", (), {"batch_size": strategy.batch_size, "batch_atoms": strategy.batch_atoms})
    sampler = pool_sampler(ctx, scorer_like)
    row["pool_batches"], row["atoms"] = len(sampler.batches), int(dm.pool_atom_counts().sum())
    if yardsticks == "yes":
        row["seconds"]["loading"] = _loading_seconds(dm, sampler)
        row["seconds"]["inference"] = _inference_seconds(module, dm, sampler, device)
    spent = {"pv": 0.0, "topk": 0.0}
    _timed(PVScorer, "score", spent, "pv")
    _timed(StreamingTopK, "update", spent, "topk")
    with tempfile.TemporaryDirectory() as tmp:
        ctx.pass_state = PassCheckpoint(Path(tmp), minutes=5.0)
        t0 = time.perf_counter()
        sel = select(strategy, ctx)
        _sync(device)
        total = time.perf_counter() - t0
        state = Path(tmp) / "pass_state.pt"
        row["pass_state_mb"] = round(state.stat().st_size / 2**20, 1) if state.exists() else None
    assert len(set(sel.ids.tolist())) == b
    s = row["seconds"]
    s.update(select_total=total, training_side=sel.seconds["train"], pool_phase=sel.seconds["pool"],
             pv=spent["pv"], topk=spent["topk"], lcmd=sel.seconds["select"])
    if "loading" in s:
        s["features"] = s["pool_phase"] - s["pv"] - s["topk"] - s["loading"]
        row["ratio_to_inference"] = total / s["inference"]
    row["seconds"] = {key: round(v, 3) for key, v in s.items()}
    row["ms_per_structure"] = {key: round(1e3 * v / n, 4) for key, v in s.items()}
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if device.startswith("cuda"):
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,20000,200000")
    ap.add_argument("--paper", action="store_true", help="add K = 50,000, B = 1,250 at the largest size")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(child_scale(*[int(x) if x.isdigit() else x for x in args.child])))
        return
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {"machine": "", "rows": []}
    import os

    res["machine"] = f"{os.cpu_count()} CPU cores (no GPU), 1 BLAS thread per process"
    sizes = [int(x) for x in args.sizes.split(",")]
    runs = [(n, 1000, 100, "yes") for n in sizes] + ([(sizes[-1], 50_000, 1250, "no")] if args.paper else [])
    for n, k, b, yard in runs:
        row = run_child(str(n), str(k), str(b), yard, script=__file__)
        res["rows"] = [r for r in res["rows"] if (r["n"], r["K"], r["B"]) != (n, k, b)] + [row]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
