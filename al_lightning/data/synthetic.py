"""The embedded "EMT catalysis" dataset (DESIGN §7): OC20-like slabs + adsorbates, EMT labels.

Every structure is one frame of a *system* (a slab of a catalyst with one adsorbate on a
random site). A system yields frames from three sources: a short BFGS relaxation, Langevin
MD and random rattles, labelled by ASE's EMT with *raw* forces (constraints not applied).
Tags follow OC20 (0 subsurface, 1 surface, 2 adsorbate); the bottom layers carry FixAtoms.

Splits: ``pool``, ``initial``, ``val`` and ``test_id`` draw from in-distribution catalysts ×
adsorbates; ``test_ood_ads`` uses unseen adsorbates (built from seen elements),
``test_ood_cat`` unseen catalysts (bimetallic surfaces and the (110) facet of seen metals),
``test_ood_both`` both. System ``i`` of split ``s`` depends only on ``(seed, s, i)``, so the
files are identical for a seed however many worker processes generate them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from al_lightning import keys as K
from al_lightning.data.io import free_mask

SPLITS = ("pool", "initial", "val", "test_id", "test_ood_ads", "test_ood_cat", "test_ood_both")
METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
ID_FACETS = ("111", "100")
OOD_FACETS = ("110",)
# bimetallic surfaces (host, guest substituted into the top layer) of pool metals
OOD_ALLOYS = (("Cu", "Pt"), ("Pd", "Au"), ("Ni", "Ag"), ("Pt", "Ni"), ("Au", "Cu"), ("Ag", "Pd"))
# adsorbates: positions relative to the binding atom (first atom) in Å
ADSORBATES: Dict[str, List[Tuple[str, Tuple[float, float, float]]]] = {
    "H": [("H", (0, 0, 0))],
    "O": [("O", (0, 0, 0))],
    "C": [("C", (0, 0, 0))],
    "N": [("N", (0, 0, 0))],
    "OH": [("O", (0, 0, 0)), ("H", (0, 0, 0.97))],
    "CO": [("C", (0, 0, 0)), ("O", (0, 0, 1.15))],
    "CH": [("C", (0, 0, 0)), ("H", (0, 0, 1.09))],
    "NH": [("N", (0, 0, 0)), ("H", (0, 0, 1.02))],
    "CH2": [("C", (0, 0, 0)), ("H", (0.9, 0, 0.6)), ("H", (-0.9, 0, 0.6))],
    "NH2": [("N", (0, 0, 0)), ("H", (0.85, 0, 0.55)), ("H", (-0.85, 0, 0.55))],
    # unseen combinations of seen elements (OOD adsorbates)
    "NO": [("N", (0, 0, 0)), ("O", (0, 0, 1.17))],
    "CN": [("C", (0, 0, 0)), ("N", (0, 0, 1.16))],
    "H2O": [("O", (0, 0, 0)), ("H", (0.76, 0, 0.59)), ("H", (-0.76, 0, 0.59))],
    "COH": [("C", (0, 0, 0)), ("O", (0, 0, 1.3)), ("H", (0.9, 0, 1.7))],
}
ID_ADSORBATES = ("H", "O", "C", "N", "OH", "CO", "CH", "NH", "CH2", "NH2")
OOD_ADSORBATES = ("NO", "CN", "H2O", "COH")
CACHE_VERSION = 2  # bump whenever generation changes: the cache key includes it


def _default_sizes() -> Dict[str, int]:
    return {"pool": 1000, "initial": 40, "val": 50, "test_id": 100,
            "test_ood_ads": 100, "test_ood_cat": 100, "test_ood_both": 100}


@dataclass(frozen=True)
class EMTCatalysisSpec:
    """Everything that determines the generated files (hashed into the cache key).

    ``sizes`` maps split → number of structures; frames per system = relax + md + rattle.
    """

    seed: int = 0
    sizes: Dict[str, int] = field(default_factory=_default_sizes)
    slab_size: Tuple[int, int, int] = (2, 2, 3)
    vacuum: float = 6.0
    n_fixed_layers: int = 1
    relax_frames: int = 3
    md_frames: int = 3
    rattle_frames: int = 2
    md_temperature_K: Tuple[float, float] = (300.0, 1200.0)
    md_steps_between_frames: int = 5
    rattle_std: Tuple[float, float] = (0.03, 0.15)
    max_force: float = 10.0
    pool_bias: Dict[str, float] = field(default_factory=dict)  # adsorbate/catalyst → weight

    def __post_init__(self) -> None:
        unknown = set(self.sizes) - set(SPLITS)
        if unknown:
            raise ValueError(f"EMT catalysis sizes: unknown split(s) {sorted(unknown)}; known: {SPLITS}")
        if any(int(n) < 0 for n in self.sizes.values()):
            raise ValueError(f"EMT catalysis sizes must be >= 0, got {self.sizes}")
        if self.relax_frames + self.md_frames + self.rattle_frames < 1:
            raise ValueError("EMT catalysis: relax_frames + md_frames + rattle_frames must be >= 1")

    def key(self) -> str:
        """Short content hash naming the cache folder."""
        blob = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def split_choices(split: str) -> Tuple[List[str], List[str]]:
    """(catalysts, adsorbates) a split draws from; catalysts as ``"Pt(111)"``/``"CuPt(111)"``."""
    id_cats = [f"{m}({f})" for f in ID_FACETS for m in METALS]  # consecutive entries: different metals
    ood_cats = [f"{m}({f})" for f in OOD_FACETS for m in METALS] + [f"{h}{g}(111)" for h, g in OOD_ALLOYS]
    cats = ood_cats if split in ("test_ood_cat", "test_ood_both") else id_cats
    ads = OOD_ADSORBATES if split in ("test_ood_ads", "test_ood_both") else ID_ADSORBATES
    return cats, list(ads)


def _weights(names: List[str], bias: Dict[str, float]) -> np.ndarray:
    w = np.array([float(bias.get(n, bias.get(n.split("(")[0], 1.0))) for n in names])
    return w / w.sum()


def _build_slab(catalyst: str, spec: EMTCatalysisSpec, rng: np.random.Generator) -> Atoms:
    """Slab with OC20 tags (1 surface, 0 below) and FixAtoms on the bottom layers."""
    name, facet = catalyst[:-5], catalyst[-4:-1]
    host, guest = (name[:2], name[2:]) if len(name) > 2 else (name, "")
    builder = {"111": fcc111, "100": fcc100, "110": fcc110}[facet]
    slab = builder(host, size=spec.slab_size, vacuum=spec.vacuum, periodic=True)
    layer = slab.get_tags()  # ase: 1 = top layer, n_layers = bottom
    n_layers = int(layer.max())
    if guest:
        top = np.flatnonzero(layer == 1)
        swap = rng.choice(top, size=max(1, len(top) // 2), replace=False)
        symbols = slab.get_chemical_symbols()
        for i in swap:
            symbols[i] = guest
        slab.set_chemical_symbols(symbols)
    fixed = np.flatnonzero(layer > n_layers - spec.n_fixed_layers)
    slab.set_tags((layer == 1).astype(int))
    slab.set_constraint(FixAtoms(indices=fixed))
    return slab


def build_system(split: str, index: int, spec: EMTCatalysisSpec) -> Atoms:
    """System ``index`` of ``split``: a slab with one adsorbate at a random position.

    Catalyst and adsorbate cycle through the split's choices (all combinations in turn);
    with ``spec.pool_bias`` the pool draws them with the given relative weights instead.
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    cats, ads = split_choices(split)
    bias = spec.pool_bias if split == "pool" else {}
    if bias:  # a shifted pool: weighted draws
        catalyst = cats[rng.choice(len(cats), p=_weights(cats, bias))]
        adsorbate = ads[rng.choice(len(ads), p=_weights(ads, bias))]
    else:  # round robin: the first systems already cover every metal and adsorbate element
        catalyst = cats[index % len(cats)]
        adsorbate = ads[(index + index // len(cats)) % len(ads)]
    slab = _build_slab(catalyst, spec, rng)
    mol = Atoms([s for s, _ in ADSORBATES[adsorbate]], positions=[p for _, p in ADSORBATES[adsorbate]])
    mol.rotate(rng.uniform(-25, 25), "x", center=(0, 0, 0))
    mol.rotate(rng.uniform(0, 360), "z", center=(0, 0, 0))
    cell = slab.get_cell()
    xy = rng.uniform(0, 1, size=2) @ np.asarray(cell)[:2, :2]
    add_adsorbate(slab, mol, height=rng.uniform(1.3, 2.0), position=tuple(xy), mol_index=0)
    tags = slab.get_tags()
    tags[-len(mol):] = 2
    slab.set_tags(tags)
    slab.info.pop("adsorbate_info", None)
    slab.info.update({K.ADSORBATE: adsorbate, K.CATALYST: catalyst})
    return slab


def _label(atoms: Atoms, source: str) -> Atoms:
    """Copy of ``atoms`` with EMT energy and raw forces stored under mace's REF keys."""
    frame = atoms.copy()
    frame.calc = EMT()
    energy = frame.get_potential_energy()
    forces = frame.get_forces(apply_constraint=False)
    frame.calc = None
    frame.info[K.REF_ENERGY] = float(energy)
    frame.arrays[K.REF_FORCES] = np.array(forces)
    frame.info[K.SOURCE] = source
    return frame


def _relax_frames(atoms: Atoms, n: int) -> Tuple[List[Atoms], Atoms]:
    from ase.optimize import BFGS

    work = atoms.copy()
    work.calc = EMT()
    snapshots = [work.get_positions()]
    opt = BFGS(work, logfile=None, maxstep=0.1)
    opt.attach(lambda: snapshots.append(work.get_positions()))
    opt.run(fmax=0.05, steps=max(3 * n, 12))
    picks = np.unique(np.linspace(0, len(snapshots) - 1, n).round().astype(int))
    frames = []
    for i in picks:
        frame = atoms.copy()
        frame.set_positions(snapshots[i], apply_constraint=False)
        frames.append(_label(frame, "relax"))
    work.calc = None
    return frames, work


def _md_frames(start: Atoms, n: int, spec: EMTCatalysisSpec, rng: np.random.Generator) -> List[Atoms]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = start.copy()
    work.calc = EMT()
    temperature = rng.uniform(*spec.md_temperature_K)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature, rng=rng)
    dyn = Langevin(work, 1.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False,
                   rng=np.random.RandomState(int(rng.integers(2**31))))
    frames = []
    for _ in range(n):
        dyn.run(spec.md_steps_between_frames)
        frame = start.copy()
        frame.set_positions(work.get_positions(), apply_constraint=False)
        frames.append(_label(frame, "md"))
        frames[-1].info["md_temperature_K"] = round(float(temperature), 1)
    return frames


def _rattle_frames(start: Atoms, n: int, spec: EMTCatalysisSpec, rng: np.random.Generator) -> List[Atoms]:
    free = free_mask(start)
    frames = []
    for _ in range(n):
        frame = start.copy()
        step = rng.normal(0.0, rng.uniform(*spec.rattle_std), size=(len(frame), 3)) * free[:, None]
        frame.set_positions(frame.get_positions() + step, apply_constraint=False)
        frames.append(_label(frame, "rattle"))
    return frames


def system_frames(split: str, index: int, spec: EMTCatalysisSpec) -> List[Atoms]:
    """All labelled frames of one system whose max |F| on free atoms is ≤ ``spec.max_force``."""
    system = build_system(split, index, spec)
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index, 1])
    relaxed_frames, relaxed = _relax_frames(system, spec.relax_frames) if spec.relax_frames else ([], system)
    frames = relaxed_frames[: spec.relax_frames]
    frames += _md_frames(relaxed, spec.md_frames, spec, rng)
    frames += _rattle_frames(relaxed, spec.rattle_frames, spec, rng)
    kept = []
    for f in frames:
        fmax = np.linalg.norm(f.arrays[K.REF_FORCES][free_mask(f)], axis=1).max(initial=0.0)
        if fmax <= spec.max_force:
            f.info[K.SYSTEM_ID] = index
            f.info["split"] = split
            kept.append(f)
    return kept


def _worker(args: Tuple[str, int, EMTCatalysisSpec]) -> List[Atoms]:
    return system_frames(*args)


def _generate_split(split: str, spec: EMTCatalysisSpec, pool: "mp.pool.Pool | None") -> List[Atoms]:
    """First ``spec.sizes[split]`` frames of systems 0, 1, 2, … (deterministic)."""
    target = int(spec.sizes.get(split, 0))
    per_system = spec.relax_frames + spec.md_frames + spec.rattle_frames
    frames: List[Atoms] = []
    start = 0
    while len(frames) < target:
        n_sys = max(1, int(np.ceil((target - len(frames)) / per_system * 1.2)))
        jobs = [(split, i, spec) for i in range(start, start + n_sys)]
        results = pool.imap(_worker, jobs, chunksize=4) if pool else map(_worker, jobs)
        for res in results:
            frames.extend(res)
        start += n_sys
    return frames[:target]


def generate(spec: EMTCatalysisSpec, out_dir: Path, workers: int = 2, progress: bool = True) -> Dict[str, Path]:
    """Generate every split of ``spec`` into ``out_dir/<split>.extxyz`` (overwrites)."""
    from ase.io import write

    out_dir.mkdir(parents=True, exist_ok=True)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # one BLAS thread per worker (TRAPS: 4-5x slower otherwise)
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(workers) if workers > 1 else None
    paths = {}
    try:
        for split in SPLITS:
            frames = _generate_split(split, spec, pool)
            for i, f in enumerate(frames):
                f.info["id"] = i
            paths[split] = out_dir / f"{split}.extxyz"
            write(paths[split], frames, format="extxyz")
            if progress:
                print(f"[al_lightning] EMT catalysis: {split}: {len(frames)} structures", file=sys.stderr)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return paths


def cache_root() -> Path:
    """``$AL_LIGHTNING_CACHE`` or ``~/.cache/al_lightning`` (DESIGN §9b)."""
    return Path(os.environ.get("AL_LIGHTNING_CACHE", Path.home() / ".cache" / "al_lightning")).expanduser()


def ensure_dataset(spec: EMTCatalysisSpec, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
    """Paths of the cached dataset for ``spec``; generates it once (process-safe, atomic)."""
    import fcntl
    import shutil
    import time

    base = (root or cache_root()) / "emt_catalysis"
    final = base / spec.key()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{spec.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other ranks / runs wait, then reuse the cache
        if not (final / "spec.json").exists():
            tmp = base / f".{spec.key()}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            generate(spec, tmp, workers=workers)
            meta = {"version": CACHE_VERSION, "spec": asdict(spec), "seconds": time.perf_counter() - t0}
            (tmp / "spec.json").write_text(json.dumps(meta, indent=1))
            os.replace(tmp, final)
    return {s: final / f"{s}.extxyz" for s in SPLITS}
