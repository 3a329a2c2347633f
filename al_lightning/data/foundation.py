"""The embedded *foundation* dataset (docs/design.md §7): what the shipped backbone is pretrained on.

Deliberately unlike the campaign data (as MPTraj is unlike OC20): no adsorbate-on-slab
frames. Five kinds of *system*, taken in turn by system index:

* ``bulk``     — fcc crystals of the 7 metals (conventional cell, small supercells), strained;
* ``alloy``    — random binary fcc alloys of two of the metals (Vegard lattice constant), strained;
* ``surface``  — clean (111) / (100) / (110) slabs of a metal or a random binary alloy;
* ``cluster``  — small metal clusters (3–13 atoms, one or two metals) in vacuum, no PBC;
* ``molecule`` — gas-phase molecules of H, C, N, O (ASE's g2 set), in vacuum, no PBC;
* ``compound`` — bulk metal–nonmetal crystals: rocksalt M(X) of a metal (or binary alloy) and one
  of H, C, N, O with a random 25–100% of the X sites occupied (hydrides, carbides, nitrides,
  oxides and their sub-stoichiometric phases, as MPTraj holds), lattice constant interpolated
  between the metal's and the EMT-optimal rocksalt one, strained. Without this kind the
  backbone never sees a metal–nonmetal bond (a v1 backbone without it fine-tuned no better
  than training from scratch on adsorbate-on-slab data: docs/results/backbone/).

Every system contributes rattled frames and Langevin MD frames, labeled by ASE's EMT with
raw forces under mace's ``REF_energy`` / ``REF_forces`` keys. Frames whose max |F| exceeds
``max_force`` are dropped. System ``i`` of split ``s`` depends only on ``(seed, s, i)``, so the
files are identical for a seed however many worker processes generate them. Splits are made
by system (``train`` and ``val`` draw disjoint systems). Cached under
``$AL_LIGHTNING_CACHE/emt_foundation/<spec hash>`` like the EMT catalysis data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc110, fcc111, molecule

from al_lightning import keys as K
from al_lightning.data.cache import cached_dataset, check_sizes, spec_key
from al_lightning.data.simulate import label_emt, langevin_frames
from al_lightning.data.synthetic import METALS

FOUNDATION_SPLITS = ("train", "val")
KINDS = ("bulk", "alloy", "surface", "cluster", "molecule", "compound")
NONMETALS = ("H", "C", "N", "O")
MOLECULES = ("H2", "O2", "N2", "CO", "CO2", "H2O", "NH3", "CH4", "C2H2", "C2H4", "C2H6", "HCN", "NO", "NO2",
             "N2O", "O3", "H2O2", "N2H4", "CH3OH", "HCOOH", "H2CO", "CH3CHO", "H3CNH2", "H2CCO", "CH3CN",
             "CH3COOH")  # closed-shell-ish g2 molecules of H, C, N, O
CACHE_VERSION = 2  # bump whenever generation changes: the cache key includes it


def _default_sizes() -> Dict[str, int]:
    return {"train": 2000, "val": 200}


@dataclass(frozen=True)
class FoundationSpec:
    """Everything that determines the generated foundation files (hashed into the cache key).

    ``sizes``: split → number of frames; per system ``rattle_frames`` + ``md_frames`` frames.
    ``strain``: max relative isotropic strain (bulk/alloy), ``shear``: max shear component.
    """

    seed: int = 0
    sizes: Dict[str, int] = field(default_factory=_default_sizes)
    rattle_frames: int = 3
    md_frames: int = 3
    rattle_std: Tuple[float, float] = (0.02, 0.12)
    md_temperature_K: Tuple[float, float] = (300.0, 1500.0)
    md_steps_between_frames: int = 8
    strain: float = 0.05
    shear: float = 0.03
    vacuum: float = 6.0
    max_force: float = 10.0

    def __post_init__(self) -> None:
        check_sizes("foundation", self.sizes, FOUNDATION_SPLITS, required=("train",))
        if self.rattle_frames < 0 or self.md_frames < 0 or self.rattle_frames + self.md_frames < 1:
            raise ValueError("foundation: rattle_frames, md_frames must be >= 0 and not both 0")

    cache_name = "emt_foundation"
    splits = FOUNDATION_SPLITS
    elements = (*METALS, *NONMETALS)

    def key(self) -> str:
        """Short content hash naming the cache folder."""
        return spec_key({"v": CACHE_VERSION, "kind": "foundation", **asdict(self)})

    def ensure(self, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
        """Paths of the cached dataset (:func:`ensure_foundation_dataset`)."""
        return ensure_foundation_dataset(self, workers=workers, root=root)


def _rng(spec: FoundationSpec, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([spec.seed, 100 + FOUNDATION_SPLITS.index(split), index, stream])


def _strained(atoms: Atoms, spec: FoundationSpec, rng: np.random.Generator) -> Atoms:
    """Cell scaled by 1 + U(-strain, strain) and sheared by U(-shear, shear) (atoms follow)."""
    deform = np.eye(3) * (1.0 + rng.uniform(-spec.strain, spec.strain))
    off = rng.uniform(-spec.shear, spec.shear, size=(3, 3))
    deform += (off + off.T) / 2 * (1 - np.eye(3))
    atoms.set_cell(np.asarray(atoms.cell) @ deform, scale_atoms=True)
    return atoms


def _random_alloy(atoms: Atoms, metals: Tuple[str, str], rng: np.random.Generator) -> Atoms:
    fraction = rng.uniform(0.15, 0.85)
    symbols = np.where(rng.uniform(size=len(atoms)) < fraction, metals[1], metals[0])
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _lattice(metals) -> float:
    """Vegard's-law fcc lattice constant (ASE reference values) of an equal mix."""
    return float(np.mean([bulk(m, "fcc").cell.cellpar()[0] * np.sqrt(2) for m in metals]))


def _bulk_system(rng: np.random.Generator, spec: FoundationSpec, alloy: bool) -> Atoms:
    metals = tuple(rng.choice(METALS, size=2, replace=False)) if alloy else (METALS[rng.integers(len(METALS))],) * 2
    reps = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)][rng.integers(4 if alloy else 3)]
    atoms = bulk(metals[0], "fcc", a=_lattice(set(metals)), cubic=True).repeat(reps)
    if alloy:
        atoms = _random_alloy(atoms, metals, rng)
    return _strained(atoms, spec, rng)


def _surface_system(rng: np.random.Generator, spec: FoundationSpec) -> Atoms:
    builder = (fcc111, fcc100, fcc110)[rng.integers(3)]
    alloy = rng.uniform() < 0.4
    metals = tuple(rng.choice(METALS, size=2, replace=False))
    layers = int(rng.integers(3, 5))
    slab = builder(metals[0], size=(2, 2, layers), a=_lattice(set(metals) if alloy else {metals[0]}),
                   vacuum=spec.vacuum, periodic=True)
    slab.set_tags(np.zeros(len(slab), dtype=int))
    slab.info.pop("adsorbate_info", None)
    return _random_alloy(slab, metals, rng) if alloy else slab


def _cluster_system(rng: np.random.Generator, spec: FoundationSpec) -> Atoms:
    n = int(rng.integers(3, 14))
    metals = rng.choice(METALS, size=int(rng.integers(1, 3)), replace=False)
    d = 0.9 * _lattice(set(metals)) / np.sqrt(2)  # nearest-neighbour distance
    positions = [np.zeros(3)]
    while len(positions) < n:  # grow: each new atom touches a random existing one, no overlaps
        v = rng.normal(size=3)
        trial = positions[rng.integers(len(positions))] + d * v / np.linalg.norm(v)
        if min(np.linalg.norm(trial - p) for p in positions) > 0.85 * d:
            positions.append(trial)
    atoms = Atoms(list(rng.choice(metals, size=n)), positions=positions, pbc=False)
    atoms.center(vacuum=spec.vacuum)
    return atoms


def _molecule_system(rng: np.random.Generator, spec: FoundationSpec) -> Atoms:
    atoms = molecule(MOLECULES[rng.integers(len(MOLECULES))])
    atoms.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COP")
    atoms.center(vacuum=spec.vacuum)
    atoms.pbc = False
    return atoms


@lru_cache(maxsize=None)
def rocksalt_scale(metal: str, nonmetal: str) -> float:
    """EMT-optimal rocksalt lattice constant of ``metal + nonmetal`` over the metal's fcc one
    (grid 0.85-1.45 in steps of 0.025; deterministic)."""
    from ase.calculators.emt import EMT

    energies = []
    for scale in np.linspace(0.85, 1.45, 25):
        atoms = bulk(metal + nonmetal, "rocksalt", a=_lattice({metal}) * scale)
        atoms.calc = EMT()
        energies.append((atoms.get_potential_energy(), float(scale)))
    return min(energies)[1]


def _compound_system(rng: np.random.Generator, spec: FoundationSpec) -> Atoms:
    metals = tuple(rng.choice(METALS, size=2, replace=False))
    alloy, nonmetal = rng.uniform() < 0.3, NONMETALS[rng.integers(len(NONMETALS))]
    occupancy = float(rng.uniform(0.25, 1.0))
    scale = 1.0 + (np.mean([rocksalt_scale(m, nonmetal) for m in (metals if alloy else metals[:1])]) - 1.0) * occupancy
    reps = [(1, 1, 1), (2, 1, 1), (2, 2, 1)][rng.integers(3)]
    atoms = bulk(metals[0] + nonmetal, "rocksalt", a=_lattice(set(metals) if alloy else {metals[0]}) * scale,
                 cubic=True).repeat(reps)
    is_metal = np.array([a.symbol != nonmetal for a in atoms])
    atoms = atoms[[i for i in range(len(atoms)) if is_metal[i] or rng.uniform() < occupancy]]
    if alloy:
        sub = _random_alloy(atoms[[a.symbol != nonmetal for a in atoms]], metals, rng)
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[symbols != nonmetal] = sub.get_chemical_symbols()
        atoms.set_chemical_symbols(list(symbols))
    return _strained(atoms, spec, rng)


def build_system(split: str, index: int, spec: FoundationSpec) -> Atoms:
    """Starting structure of system ``index`` of ``split``; its kind cycles through KINDS."""
    rng = _rng(spec, split, index)
    kind = KINDS[index % len(KINDS)]
    if kind in ("bulk", "alloy"):
        atoms = _bulk_system(rng, spec, alloy=kind == "alloy")
    elif kind == "surface":
        atoms = _surface_system(rng, spec)
    elif kind == "cluster":
        atoms = _cluster_system(rng, spec)
    elif kind == "compound":
        atoms = _compound_system(rng, spec)
    else:
        atoms = _molecule_system(rng, spec)
    atoms.info.update({"kind": kind, "formula": atoms.get_chemical_formula()})
    return atoms


def system_frames(split: str, index: int, spec: FoundationSpec) -> List[Atoms]:
    """Rattled + MD frames of one system, labeled by EMT, with max |F| <= ``spec.max_force``."""
    start = build_system(split, index, spec)
    rng = _rng(spec, split, index, stream=1)
    frames = []
    for _ in range(spec.rattle_frames):
        frame = start.copy()
        frame.positions += rng.normal(0.0, rng.uniform(*spec.rattle_std), size=(len(frame), 3))
        frames.append(label_emt(frame, "rattle"))
    if spec.md_frames:
        temperature = rng.uniform(*spec.md_temperature_K)
        frames += langevin_frames(start, spec.md_frames, temperature, spec.md_steps_between_frames, rng)
    kept = []
    for f in frames:
        if np.linalg.norm(f.arrays[K.REF_FORCES], axis=1).max(initial=0.0) <= spec.max_force:
            f.info.update({K.SYSTEM_ID: index, "split": split})
            kept.append(f)
    return kept


def ensure_foundation_dataset(spec: FoundationSpec, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
    """Paths of the cached foundation dataset for ``spec``; generated once (process-safe, atomic)."""
    sizes = {s: int(spec.sizes.get(s, 0)) for s in FOUNDATION_SPLITS}
    per_system = {s: spec.rattle_frames + spec.md_frames for s in sizes}
    return cached_dataset("emt_foundation", spec.key(), {"version": CACHE_VERSION, **asdict(spec)}, sizes,
                          per_system, partial(system_frames, spec=spec), workers=workers, root=root)
