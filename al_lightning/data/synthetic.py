"""The embedded "EMT catalysis" dataset (docs/design.md §7): OC20-like slabs + adsorbates, EMT labels.

Every structure is one frame of a *system* (a slab of a catalyst with one adsorbate on a
random site). A system yields frames from three sources: a short BFGS relaxation, Langevin
MD and random rattles, labelled by ASE's EMT with *raw* forces (constraints not applied).
Tags follow OC20 (0 subsurface, 1 surface, 2 adsorbate); the bottom layers carry FixAtoms.

Splits: ``pool``, ``initial``, ``val`` and ``test_id`` draw from in-distribution catalysts ×
adsorbates; ``test_ood_ads`` uses unseen adsorbates (built from seen elements),
``test_ood_cat`` unseen catalysts (bimetallic surfaces and the (110) facet of seen metals),
``test_ood_both`` both. With ``held_out_metals`` the other splits use the remaining metals only and
``test_ood_metal`` holds the held-out metals' in-distribution facets with seen adsorbates (catalysts the
pool never shows, whose metals the EMT backbone was pretrained on: where a fine-tune forgets first).
System ``i`` of split ``s`` depends only on ``(seed, s, i)``, so the files are identical for a seed
however many worker processes generate them.

``mode="trajectory"`` (OC20 S2EF-like, the benchmark setting): each system contributes a whole
relaxation + MD trajectory with a heavy-tailed number of frames, so the pool is large and
redundant (a few systems hold most frames) and random sampling over-buys them; splits are made
by system, never by frame (``info["system_key"]`` = ``"<split>/<index>"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc110, fcc111
from ase.constraints import FixAtoms

from al_lightning import keys as K
from al_lightning.data import cache
from al_lightning.data.cache import cache_root  # noqa: F401  (re-exported: the cache root of every dataset)
from al_lightning.data.simulate import bfgs_path, emt_calculator, label_emt, langevin_frames
from al_lightning.data.io import free_mask

SPLITS = ("pool", "initial", "val", "test_id", "test_ood_ads", "test_ood_cat", "test_ood_both", "test_ood_metal")
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
CACHE_VERSION = 3  # bump whenever generation changes: the cache key includes it


def _default_sizes() -> Dict[str, int]:
    return {"pool": 1000, "initial": 40, "val": 50, "test_id": 100,
            "test_ood_ads": 100, "test_ood_cat": 100, "test_ood_both": 100}


@dataclass(frozen=True)
class TrajectoryLengths:
    """Heavy-tailed trajectory lengths per system (:func:`trajectory_length`: log-normal with mean
    ``traj_frames_mean`` and shape ``traj_frames_sigma``, at most ``traj_frames_max``) and the
    frames an evaluation split keeps of each (``eval_frames_per_system``); shared by the
    trajectory datasets (EMT catalysis, xTB molecules)."""

    traj_frames_mean: float = 20.0
    traj_frames_sigma: float = 1.4
    traj_frames_max: int = 300
    eval_frames_per_system: int = 3

    def check_lengths(self, name: str) -> None:
        """ValueError (one line, prefixed ``name``) for impossible length settings."""
        if self.traj_frames_mean < 2 or self.traj_frames_sigma < 0 or self.traj_frames_max < self.traj_frames_mean:
            raise ValueError(f"{name}: need traj_frames_mean >= 2, traj_frames_sigma >= 0 and "
                             f"traj_frames_max >= traj_frames_mean (got {self.traj_frames_mean}, "
                             f"{self.traj_frames_sigma}, {self.traj_frames_max})")
        if self.eval_frames_per_system < 1:
            raise ValueError(f"{name}: eval_frames_per_system must be >= 1")


@dataclass(frozen=True)
class EMTCatalysisSpec(TrajectoryLengths):
    """Everything that determines the generated files (hashed into the cache key).

    ``sizes`` maps split → number of structures. ``mode="frames"``: each system gives
    relax + md + rattle frames. ``mode="trajectory"`` (OC20 S2EF-like): each system gives a
    whole trajectory — BFGS relaxation steps, then Langevin MD at the temperatures of
    ``traj_temperatures_K`` — whose length is drawn per system from a log-normal with mean
    ``traj_frames_mean`` and shape ``traj_frames_sigma`` (a heavy tail: a few systems hold many
    frames); the pool keeps whole trajectories, every other split keeps at most
    ``eval_frames_per_system`` frames of each (random, in trajectory order), so evaluation and
    the initial set cover many systems.
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
    mode: str = "frames"
    traj_temperatures_K: Tuple[float, ...] = (300.0, 600.0, 900.0)
    held_out_metals: Tuple[str, ...] = ()  # metals only test_ood_metal shows (the other splits: the rest)

    def __post_init__(self) -> None:
        cache.check_sizes("EMT catalysis", self.sizes, SPLITS)
        if self.relax_frames + self.md_frames + self.rattle_frames < 1:
            raise ValueError("EMT catalysis: relax_frames + md_frames + rattle_frames must be >= 1")
        if self.mode not in ("frames", "trajectory"):
            raise ValueError(f"EMT catalysis mode must be 'frames' or 'trajectory', got {self.mode!r}")
        self.check_lengths("EMT catalysis")
        if not self.traj_temperatures_K:
            raise ValueError("EMT catalysis: traj_temperatures_K must be non-empty")
        held = set(self.held_out_metals)
        if held - set(METALS) or len(held) >= len(METALS):
            raise ValueError(f"EMT catalysis held_out_metals must be some (not all) of {METALS}, got {list(self.held_out_metals)}")
        if bool(held) != (self.sizes.get("test_ood_metal", 0) > 0):
            raise ValueError("EMT catalysis: held_out_metals and sizes.test_ood_metal go together (set both or neither)")

    def frames_per_system(self, split: str) -> float:
        """Expected frames a system of ``split`` contributes (sizes the generation batches)."""
        if self.mode == "frames":
            return self.relax_frames + self.md_frames + self.rattle_frames
        return self.traj_frames_mean if split == "pool" else min(self.eval_frames_per_system, self.traj_frames_mean)

    cache_name = "emt_catalysis"
    splits = SPLITS
    elements = (*METALS, "H", "C", "N", "O")

    def key(self) -> str:
        """Short content hash naming the cache folder (``held_out_metals`` only when set: the data of
        every spec without it keep their key)."""
        payload = asdict(self)
        if not self.held_out_metals:
            del payload["held_out_metals"]
        return cache.spec_key({"v": CACHE_VERSION, **payload})

    def ensure(self, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
        """Paths of the cached dataset (:func:`ensure_dataset`)."""
        return ensure_dataset(self, workers=workers, root=root)


def split_choices(split: str, held_out: Tuple[str, ...] = ()) -> Tuple[List[str], List[str]]:
    """(catalysts, adsorbates) a split draws from; catalysts as ``"Pt(111)"``/``"CuPt(111)"``.
    ``held_out``: metals only ``test_ood_metal`` draws from (every other split: the others)."""
    metals = [m for m in METALS if (m in held_out) == (split == "test_ood_metal")] if held_out else list(METALS)
    id_cats = [f"{m}({f})" for f in ID_FACETS for m in metals]  # consecutive entries: different metals
    ood_cats = [f"{m}({f})" for f in OOD_FACETS for m in metals] + [
        f"{h}{g}(111)" for h, g in OOD_ALLOYS if h in metals and g in metals]
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
    cats, ads = split_choices(split, spec.held_out_metals)
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


_label = label_emt  # the shared EMT labeling (raw forces under REF_* keys)


def _relax_frames(atoms: Atoms, n: int) -> Tuple[List[Atoms], Atoms]:
    snapshots, work = bfgs_path(atoms, emt_calculator, steps=max(3 * n, 12), fmax=0.05, maxstep=0.1)
    picks = np.unique(np.linspace(0, len(snapshots) - 1, n).round().astype(int))
    frames = []
    for i in picks:
        frame = atoms.copy()
        frame.set_positions(snapshots[i], apply_constraint=False)
        frames.append(_label(frame, "relax"))
    work.calc = None
    return frames, work


def _md_frames(start: Atoms, n: int, spec: EMTCatalysisSpec, rng: np.random.Generator) -> List[Atoms]:
    temperature = rng.uniform(*spec.md_temperature_K)
    return langevin_frames(start, n, temperature, spec.md_steps_between_frames, rng)


def _rattle_frames(start: Atoms, n: int, spec: EMTCatalysisSpec, rng: np.random.Generator) -> List[Atoms]:
    free = free_mask(start)
    frames = []
    for _ in range(n):
        frame = start.copy()
        step = rng.normal(0.0, rng.uniform(*spec.rattle_std), size=(len(frame), 3)) * free[:, None]
        frame.set_positions(frame.get_positions() + step, apply_constraint=False)
        frames.append(_label(frame, "rattle"))
    return frames


def _keep(frames: List[Atoms], split: str, index: int, spec: EMTCatalysisSpec) -> List[Atoms]:
    """Frames with max |F| on free atoms <= ``spec.max_force``, tagged with their system."""
    kept = []
    for f in frames:
        fmax = np.linalg.norm(f.arrays[K.REF_FORCES][free_mask(f)], axis=1).max(initial=0.0)
        if fmax <= spec.max_force:
            f.info.update({K.SYSTEM_ID: index, "split": split, "system_key": f"{split}/{index}"})
            kept.append(f)
    return kept


def system_frames(split: str, index: int, spec: EMTCatalysisSpec) -> List[Atoms]:
    """All labelled frames of one system whose max |F| on free atoms is ≤ ``spec.max_force``."""
    if spec.mode == "trajectory":
        return trajectory_frames(split, index, spec)
    system = build_system(split, index, spec)
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index, 1])
    relaxed_frames, relaxed = _relax_frames(system, spec.relax_frames) if spec.relax_frames else ([], system)
    frames = relaxed_frames[: spec.relax_frames]
    frames += _md_frames(relaxed, spec.md_frames, spec, rng)
    frames += _rattle_frames(relaxed, spec.rattle_frames, spec, rng)
    return _keep(frames, split, index, spec)


def trajectory_length(index: int, spec) -> int:
    """Frames of system ``index``'s trajectory: log-normal with mean ``traj_frames_mean`` and
    shape ``traj_frames_sigma``, clipped to [2, traj_frames_max]. The quantile of system i is
    the golden-ratio sequence (i·0.618… + offset(seed)) mod 1, so even a pool of a few dozen
    systems follows the heavy-tailed distribution closely (iid draws would not). ``spec``: a
    :class:`TrajectoryLengths` with a ``seed``."""
    from scipy.special import ndtri

    offset = np.random.default_rng([spec.seed, 77]).uniform()
    u = (index * 0.6180339887498949 + offset) % 1.0
    mu = np.log(spec.traj_frames_mean) - spec.traj_frames_sigma ** 2 / 2
    length = np.exp(mu + spec.traj_frames_sigma * ndtri(min(max(u, 1e-6), 1 - 1e-6)))
    return int(np.clip(round(float(length)), 2, spec.traj_frames_max))


def _relax_trajectory(atoms: Atoms, n: int) -> Tuple[List[Atoms], Atoms]:
    """Up to ``n`` frames of a BFGS relaxation (every step from the start), and the end point."""
    snapshots, work = bfgs_path(atoms, emt_calculator, steps=max(n - 1, 1), fmax=0.03, maxstep=0.05)
    frames = []
    for pos in snapshots[:n]:
        frame = atoms.copy()
        frame.set_positions(pos, apply_constraint=False)
        frames.append(_label(frame, "relax"))
    work.calc = None
    end = atoms.copy()
    end.set_positions(work.get_positions(), apply_constraint=False)
    return frames, end


def trajectory_frames(split: str, index: int, spec: EMTCatalysisSpec) -> List[Atoms]:
    """One system's trajectory (trajectory mode): relaxation, then MD at each temperature.

    About a third of the frames come from the relaxation (fewer if it converges earlier),
    the rest from Langevin runs from the relaxed structure, one per temperature in turn.
    Non-pool splits keep ``eval_frames_per_system`` random frames of it, in order.
    """
    system = build_system(split, index, spec)
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index, 2])
    n_total = trajectory_length(index, spec)
    if split != "pool":  # evaluation keeps a few frames: a short trajectory is enough (cheaper)
        n_total = min(n_total, 4 * spec.eval_frames_per_system)
    frames, relaxed = _relax_trajectory(system, max(1, n_total // 3))
    n_md = n_total - len(frames)
    temps = spec.traj_temperatures_K[: max(1, min(len(spec.traj_temperatures_K), n_md))]
    for k, temperature in enumerate(temps):
        n = n_md // len(temps) + (1 if k < n_md % len(temps) else 0)
        if n:
            frames += langevin_frames(relaxed, n, float(temperature), spec.md_steps_between_frames, rng)
    kept = _keep(frames, split, index, spec)
    if split != "pool" and len(kept) > spec.eval_frames_per_system:
        pick = np.sort(rng.choice(len(kept), size=spec.eval_frames_per_system, replace=False))
        kept = [kept[i] for i in pick]
    return kept


def generate(spec: EMTCatalysisSpec, out_dir: Path, workers: int = 2, progress: bool = True) -> Dict[str, Path]:
    """Generate every split of ``spec`` into ``out_dir/<split>.extxyz`` (overwrites)."""
    return cache.generate("EMT catalysis", _sizes(spec), _per_system(spec), partial(system_frames, spec=spec),
                          out_dir, workers=workers, progress=progress)


def ensure_dataset(spec: EMTCatalysisSpec, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
    """Paths of the cached dataset for ``spec``; generates it once (process-safe, atomic)."""
    return cache.cached_dataset("emt_catalysis", spec.key(), {"version": CACHE_VERSION, **asdict(spec)},
                                _sizes(spec), _per_system(spec), partial(system_frames, spec=spec),
                                workers=workers, root=root)


def _sizes(spec: EMTCatalysisSpec) -> Dict[str, int]:
    """Structures per split; ``test_ood_metal`` only with held-out metals (older caches lack its file)."""
    return {s: int(spec.sizes.get(s, 0)) for s in SPLITS if s != "test_ood_metal" or spec.held_out_metals}


def _per_system(spec: EMTCatalysisSpec) -> Dict[str, float]:
    return {s: spec.frames_per_system(s) for s in SPLITS}
