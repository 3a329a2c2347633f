"""Generate-once, process-safe cache of an embedded dataset (one extxyz file per split).

``$AL_LIGHTNING_CACHE/<name>/<key>/`` holds ``<split>.extxyz`` and ``spec.json``; a kernel lock
(``fcntl.flock``) makes other processes (DDP ranks, parallel runs) wait and then reuse the
folder, and the folder appears by an atomic rename only once complete.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

FramesFn = Callable[[str, int], List[Atoms]]  # (split, system index) -> labeled frames (picklable)


def cache_root() -> Path:
    """``$AL_LIGHTNING_CACHE`` or ``~/.cache/al_lightning`` (docs/design.md §9b)."""
    return Path(os.environ.get("AL_LIGHTNING_CACHE", Path.home() / ".cache" / "al_lightning")).expanduser()


def check_sizes(name: str, sizes: Dict[str, int], splits: Sequence[str], required: Sequence[str] = ()) -> None:
    """ValueError (one line) for unknown splits, negative sizes or a ``required`` split below 1."""
    unknown = set(sizes) - set(splits)
    if unknown:
        raise ValueError(f"{name} sizes: unknown split(s) {sorted(unknown)}; known: {tuple(splits)}")
    if any(int(n) < 0 for n in sizes.values()) or any(int(sizes.get(s, 0)) < 1 for s in required):
        need = "".join(f" with {s} >= 1" for s in required)
        raise ValueError(f"{name} sizes must be >= 0{need}, got {sizes}")


def spec_key(payload: dict) -> str:
    """Short content hash (12 hex digits) of a JSON-able spec payload: the cache folder's name."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def generate_split(split: str, target: int, per_system: float, frames_fn: FramesFn,
                   pool: "mp.pool.Pool | None") -> List[Atoms]:
    """First ``target`` frames of systems 0, 1, 2, … of ``split`` (deterministic in any pool)."""
    frames: List[Atoms] = []
    start = 0
    while len(frames) < target:
        n_sys = max(1, int(np.ceil((target - len(frames)) / max(per_system, 1) * 1.2)))
        jobs = [(split, i) for i in range(start, start + n_sys)]
        results = pool.starmap(frames_fn, jobs, chunksize=4) if pool else [frames_fn(*j) for j in jobs]
        for res in results:
            frames.extend(res)
        start += n_sys
    return frames[:target]


def generate(name: str, sizes: Dict[str, int], per_system: Dict[str, float], frames_fn: FramesFn, out_dir: Path,
             workers: int = 2, progress: bool = True) -> Dict[str, Path]:
    """Write ``out_dir/<split>.extxyz`` for every split of ``sizes`` (frames get ``info["id"]``);
    ``per_system[split]``: expected frames per system (sizes the batches of systems)."""
    from ase.io import write

    out_dir.mkdir(parents=True, exist_ok=True)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # one BLAS thread per worker (TRAPS: 4-5x slower otherwise)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    paths = {}
    try:
        for split, target in sizes.items():
            frames = generate_split(split, target, per_system[split], frames_fn, pool)
            for i, f in enumerate(frames):
                f.info["id"] = i
            paths[split] = out_dir / f"{split}.extxyz"
            write(paths[split], frames, format="extxyz")
            if progress:
                print(f"[al_lightning] {name}: {split}: {len(frames)} structures", file=sys.stderr)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return paths


def cached_dataset(name: str, key: str, spec: dict, sizes: Dict[str, int], per_system: Dict[str, float],
                   frames_fn: FramesFn,
                   workers: int = 2, root: Optional[Path] = None) -> Dict[str, Path]:
    """Paths ``{split: <root>/<name>/<key>/<split>.extxyz}``; generates them once (atomic, locked)."""
    import fcntl
    import shutil

    base = (root or cache_root()) / name
    final = base / key
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other ranks / runs wait, then reuse the cache
        if not (final / "spec.json").exists():
            tmp = base / f".{key}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            generate(name, sizes, per_system, frames_fn, tmp, workers=workers)
            meta = {"spec": spec, "seconds": time.perf_counter() - t0}
            (tmp / "spec.json").write_text(json.dumps(meta, indent=1))
            os.replace(tmp, final)
    return {s: final / f"{s}.extxyz" for s in sizes}
