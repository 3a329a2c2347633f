"""End-to-end acquisition benchmark at pool scale (issue 11 item 4; docs/design.md §10).

Writes one JSON file (default docs/results/bench/end_to_end.json) and prints it. Every
measurement runs in its own subprocess (peak RSS = that process's ru_maxrss), one BLAS thread.

  loading   the production loading path alone — pool file (extxyz, byte-offset index) →
            ``pool_dataset`` (labels stripped) → graphs in DataLoader workers → batches of 16
            via ShardBatches — at 2k, 8k, 32k, 128k structures; num_workers 0 and 2 at 8k.
  scoring   PV (the production PVScorer) + streaming top-K + LCMD on synthetic NTK-EF-shaped
            features (2 rows of p = 256 per structure, 2p LCMD vectors; K = 1000, B = 100),
            streamed in batches of 16 as in the pool pass, at 2k … 128k.
  e2e       the real path, ``select(PVStrategy(pv_lcmd, ntk_e | ntk_ef), ctx)`` with the shipped
            backbone (the demo's model) on 2k and 8k pools: training side, pool predict, top-K,
            LCMD; beside it one energy+forces ``predict_step`` pass and the loading pass alone
            over the same batches. Seconds per structure split into loading, features, scoring,
            selection. At 8k also with 2 DataLoader workers and with pool batches of 64.

Pools are unlabeled copies of the demo's trajectory-pool frames with N(0, 0.03 Å) displacements,
cached under $AL_LIGHTNING_CACHE/bench.

    OMP_NUM_THREADS=1 python benchmarks/bench_end_to_end.py [--quick] [--only loading,scoring,e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(loading=[2000, 8000, 32000, 128000], scoring=[2000, 8000, 32000, 128000], e2e=[2000, 8000])
QUICK = dict(loading=[200, 800], scoring=[200, 800], e2e=[100])
BACKBONE = ROOT / "models" / "emt_foundation.model"
DEMO_DATA = dict(seed=0, mode="trajectory", sizes={"pool": 800, "initial": 30, "val": 30})


def demo_paths():
    from al_lightning.data.synthetic import EMTCatalysisSpec, ensure_dataset

    return ensure_dataset(EMTCatalysisSpec(**DEMO_DATA))


def pool_file(n: int) -> Path:
    """n unlabeled, displaced copies of the demo pool frames (written once, atomically)."""
    import numpy as np
    from ase.io import write

    from al_lightning.data.io import read_structures
    from al_lightning.data.synthetic import cache_root

    path = cache_root() / "bench" / f"pool_{n}.extxyz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    base = read_structures(demo_paths()["pool"])
    tmp = path.with_suffix(".tmp.extxyz")
    rng = np.random.default_rng(n)
    with open(tmp, "w") as fh:
        for k in range(n):
            atoms = base[k % len(base)].copy()
            atoms.calc = None
            atoms.info = {"source": f"bench copy {k} of demo pool frame {k % len(base)}"}
            for key in list(atoms.arrays):
                if key not in ("numbers", "positions"):
                    del atoms.arrays[key]
            atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
            write(fh, atoms, format="extxyz")
    os.replace(tmp, path)
    return path


def datamodule(n: int, workers: int = 0):
    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.model.module import MACEModule

    paths = demo_paths()
    dm = ActiveDataModule(files={"pool": str(pool_file(n)),
                                 "initial": str(paths["initial"]), "val": str(paths["val"])},
                          num_workers=workers, eval_batch_size=16)
    module = MACEModule(foundation=str(BACKBONE), dtype="float32")
    dm.prepare_data()
    dm.setup("fit")
    module.build(dm)
    return module, dm


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_loading(n: int, workers: int) -> dict:
    import numpy as np

    from al_lightning.data.batches import ShardBatches

    t0 = time.perf_counter()
    _, dm = datamodule(n, workers)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    count = sum(int(b["num_atoms"].numel()) for b in dm.batch_loader(dm.pool_dataset(),
                                                                       ShardBatches(np.arange(n), 16)))
    dt = time.perf_counter() - t0
    return {"n": n, "workers": workers, "open_seconds": round(t_open, 3), "seconds": round(dt, 3),
            "seconds_per_structure": dt / count, "peak_rss_mb": round(peak_rss_mb(), 1)}


def child_scoring(n: int) -> dict:
    import torch

    from al_lightning.acquisition import PVStrategy, ShortlistLCMD, build_precision, gram_partial
    from al_lightning.acquisition.callback import merged_shortlist
    from al_lightning.acquisition.pv import PVScorer
    from al_lightning.acquisition.strategies import AcquisitionContext
    from al_lightning.acquisition.topk import StreamingTopK
    from al_lightning.features import PoolRows

    p, k, b, batch = 256, min(1000, n), min(100, n), 16
    scale = torch.arange(1, p + 1, dtype=torch.float64).rsqrt()
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(1000, p, generator=gen, dtype=torch.float64) * scale
    gram = gram_partial(train)
    precision = build_precision(gram, rel_lambda=1e-3)
    strategy = PVStrategy(selector=ShortlistLCMD(k), calibration=False)
    scorer = PVScorer(strategy, None, k, precision, torch.cat([train[:200], train[200:400]], 1), gram,
                      torch.float32 if precision.float32_error_bound(gram.gram) <= 1e-3 else torch.float64,
                      precision.float32_error_bound(gram.gram), 0.0)
    top, spent = StreamingTopK(k, vector_dtype=torch.float32), 0.0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        rows = (torch.randn(m, 2, p, generator=gen) * scale.float())
        out = PoolRows(torch.arange(start, start + m), rows, rows.reshape(m, 2 * p), None, None)
        t0 = time.perf_counter()
        top.update(*scorer.score(None, out))
        spent += time.perf_counter() - t0
    ctx = AcquisitionContext(None, None, 0, 0, b, None)
    t0 = time.perf_counter()
    merged = merged_shortlist(ctx, top.result(), k)
    ids = scorer.choose(merged, b)
    t_sel = time.perf_counter() - t0
    assert len(set(ids.tolist())) == b
    return {"n": n, "p": p, "rows": 2, "k": k, "b": b, "score_topk_seconds": round(spent, 3),
            "lcmd_seconds": round(t_sel, 3), "seconds_per_structure": (spent + t_sel) / n,
            "float32_scoring": scorer.score_dtype == torch.float32, "peak_rss_mb": round(peak_rss_mb(), 1)}


def _timed_pass(module, dm, sampler, spec=None) -> float:
    from al_lightning.acquisition.predict import predict_batches
    from al_lightning.acquisition.strategies import AcquisitionContext

    ctx = AcquisitionContext(module, dm, 0, 0, 1, None)
    t0 = time.perf_counter()
    for _ in predict_batches(ctx, dm.pool_dataset(), sampler, spec):
        pass
    return time.perf_counter() - t0


def child_e2e(n: int, kind: str, workers: int, batch: int = 16) -> dict:
    import numpy as np

    from al_lightning.acquisition import AcquisitionContext, PVStrategy, ShortlistLCMD, select
    from al_lightning.data.batches import ShardBatches
    from al_lightning.acquisition.pv import PVScorer

    module, dm = datamodule(n, workers)
    sampler = ShardBatches(np.arange(n), batch)
    t0 = time.perf_counter()
    for _ in dm.batch_loader(dm.pool_dataset(), sampler):
        pass
    t_load = time.perf_counter() - t0
    _timed_pass(module, dm, ShardBatches(np.arange(32), 16))  # warm-up (allocator, kernels)
    t_infer = _timed_pass(module, dm, sampler)
    spent = [0.0]
    real = PVScorer.score

    def timed(self, batch, out):
        t = time.perf_counter()
        res = real(self, batch, out)
        spent[0] += time.perf_counter() - t
        return res

    PVScorer.score = timed
    strategy = PVStrategy(features=kind, selector=ShortlistLCMD(240), batch_size=batch, calibration=False)
    ctx = AcquisitionContext(module, dm, 0, 0, 30, dm.candidate_ids())
    t0 = time.perf_counter()
    sel = select(strategy, ctx)
    total = time.perf_counter() - t0
    pool = sel.seconds["pool"]
    return {"n": n, "kind": kind, "workers": workers, "batch_size": batch, "seconds": round(total, 2),
            "phases": sel.seconds,
            "per_structure": {"loading": t_load / n,
                              "features": (pool - spent[0] - t_load) / n if workers == 0 else None,
                              "scoring": spent[0] / n, "selection": sel.seconds["select"] / n,
                              "training_side": sel.seconds["train"] / n, "total": total / n},
            "inference_seconds_per_structure": t_infer / n, "ratio_to_inference": total / t_infer,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_child(*args: str, script: str = __file__) -> dict:
    """``script --child *args`` in its own process (one BLAS thread); its last stdout line as JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(rows, key="seconds_per_structure") -> float:
    """Slope of log(total seconds) on log(n): 1.0 = linear."""
    import numpy as np

    n = np.array([r["n"] for r in rows], float)
    t = np.array([r[key] * r["n"] for r in rows], float)
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="loading,scoring,e2e")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench" / "end_to_end.json"))
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(1)
        name, *rest = args.child
        fn = {"loading": child_loading, "scoring": child_scoring, "e2e": child_e2e}[name]
        print(json.dumps(fn(*[int(x) if x.isdigit() else x for x in rest])))
        return
    sizes = QUICK if args.quick else SIZES
    res: dict = {"machine": f"{os.cpu_count()} CPU cores, 1 BLAS thread per process", "quick": args.quick}
    only = args.only.split(",")
    if "loading" in only:
        rows = [run_child("loading", str(n), "0") for n in sizes["loading"]]
        workers = run_child("loading", str(sizes["loading"][1]), "2")
        res["loading"] = {"rows": rows, "workers_2": workers, "scaling_exponent": exponent(rows),
                          "per_structure_ratio_largest_to_smallest": rows[-1]["seconds_per_structure"]
                          / rows[0]["seconds_per_structure"],
                          "rss_ratio_largest_to_second": rows[-1]["peak_rss_mb"] / rows[1]["peak_rss_mb"],
                          "workers_speedup": rows[1]["seconds"] / workers["seconds"]}
    if "scoring" in only:
        rows = [run_child("scoring", str(n)) for n in sizes["scoring"]]
        res["scoring"] = {"rows": rows, "scaling_exponent": exponent(rows),
                          "per_structure_ratio_largest_to_smallest": rows[-1]["seconds_per_structure"]
                          / rows[0]["seconds_per_structure"],
                          "rss_ratio_largest_to_second": rows[-1]["peak_rss_mb"] / rows[min(1, len(rows) - 1)]["peak_rss_mb"]}
    if "e2e" in only:
        big = str(sizes["e2e"][-1])
        rows = [run_child("e2e", str(n), kind, "0", "16") for n in sizes["e2e"] for kind in ("ntk_e", "ntk_ef")]
        rows += [run_child("e2e", big, "ntk_ef", w, b) for w, b in (("2", "16"), ("0", "64"), ("2", "64"))]
        res["e2e"] = {"rows": rows, "targets": {"ntk_e": 2.5, "ntk_ef": 4.0}}
    out = Path(args.out)
    if not args.quick:  # a partial run (--only) keeps the other sections of the file
        old = json.loads(out.read_text()) if out.exists() and len(only) < 3 else {}
        res = {**old, **res}
        out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(res, indent=1)
    if not args.quick:
        out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
