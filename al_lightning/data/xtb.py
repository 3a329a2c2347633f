"""The embedded "xTB molecules" datasets (docs/design.md §7): real quantum chemistry (GFN2-xTB by
tblite) on small HCNO molecules, in the spirit of Transition1x / RGD1.

:class:`XTBMoleculesSpec` — the reactive benchmark. Every structure is one frame of a *system*:
a molecule (from :data:`~al_lightning.data.molecules.ID_MOLECULES`, 3D by RDKit, relaxed by xTB)
and either

* ``md``: a Langevin run at 1000–3000 K (bonds break and form), or
* a reaction template at one site (:func:`~al_lightning.data.molecules.template_sites`):
  ``h_shift`` (a 1,2-H shift: xTB-relaxed product, IDPP interpolation, a short xTB NEB),
  ``dissociation`` / ``ring_opening`` (a relaxed bond-stretch scan) or ``isomerisation``
  (rotation about a double bond), followed by MD at 500–1500 K from the path's
  highest-energy frame.

Trajectory lengths are heavy-tailed per system (as in the EMT trajectory pool); the pool keeps
whole trajectories. Splits are made by reaction (molecule, template, site) and by system,
never by frame: ``pool`` and ``initial`` use two thirds of each molecule's sites, ``val``,
``test_id`` (≤ ``eval_frames_per_system`` frames per system) and ``test_id_frames`` (whole
held-out trajectories, frame-uniform as OC20's S2EF test frames) the other third;
``test_ood_mol`` has unseen molecules (functional groups the pool never shows) and
``test_ood_rxn`` the unseen template (ring opening) on pool molecules.

Per frame ``info``: ``system_key``, ``smiles``, ``template`` (``"none"`` for MD systems),
``reactive`` (a bond broken or formed against the system's start), ``bond_change``,
``charge``, ``multiplicity``; raw xTB energies (eV) and forces (eV/Å). An SCF failure ends
its system's trajectory there (counted in ``scf_failures`` on the system's first frame); an
NEB not converged to 0.5 eV/Å in ``neb_steps``, or a held bond length that ASE's RATTLE cannot
keep, is a failed path (``path_failed``; the frames made until then are kept).

:class:`XTBFoundationSpec` — the molecular backbone's pretraining data: near-equilibrium
frames (conformers, small rattles, 300–600 K MD; frames with a changed bond dropped) of the
*other* molecules of :data:`~al_lightning.data.molecules.FOUNDATION_MOLECULES`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import CalculationFailed

from al_lightning import keys as K
from al_lightning.data.cache import cached_dataset, check_sizes, spec_key
from al_lightning.data.molecules import (FOUNDATION_MOLECULES, ID_MOLECULES, OOD_MOLECULES, bond_change, bonds,
                                         embed, side_of, template_sites, xtb_calculator)
from al_lightning.data.simulate import label_frame, langevin_frames
from al_lightning.data.synthetic import TrajectoryLengths, trajectory_length

SPLITS = ("pool", "initial", "val", "test_id", "test_id_frames", "test_ood_mol", "test_ood_rxn")
ID_KINDS = ("md", "h_shift", "dissociation", "isomerisation")
OOD_TEMPLATE = "ring_opening"
HELD_OUT = ("val", "test_id", "test_id_frames")  # splits of the held-out third of the sites
CACHE_VERSION = 1  # bump whenever generation changes: the cache key includes it (and the molecule lists)


def _default_sizes() -> Dict[str, int]:
    return {"pool": 3000, "initial": 40, "val": 60, "test_id": 150, "test_id_frames": 150,
            "test_ood_mol": 150, "test_ood_rxn": 100}


@dataclass(frozen=True)
class _XTBData:
    """What both xTB specs share: seed, MD step settings and SCF accuracy; the cache key (the
    molecule lists included) and generation. Subclasses set ``cache_name``, ``splits``,
    :meth:`molecule_lists`, :meth:`frames_per_system` and :meth:`frames_fn`."""

    seed: int = 0
    md_timestep_fs: float = 0.5
    md_steps_between_frames: int = 10
    accuracy: float = 1.0

    cache_name = ""
    splits = ()  # (a class attribute, not a field: not in the cache key)
    elements = ("H", "C", "N", "O")

    def molecule_lists(self):
        raise NotImplementedError

    def frames_per_system(self, split: str) -> float:
        raise NotImplementedError

    def frames_fn(self):
        raise NotImplementedError

    def key(self) -> str:
        """Short content hash naming the cache folder."""
        return spec_key({"v": CACHE_VERSION, "kind": self.cache_name, "molecules": self.molecule_lists(),
                         **asdict(self)})

    def ensure(self, workers: int = 2, root: "Path | None" = None) -> Dict[str, Path]:
        """Paths of the cached dataset; generated once (process-safe, atomic)."""
        sizes = {s: int(self.sizes.get(s, 0)) for s in self.splits}
        return cached_dataset(self.cache_name, self.key(), {"version": CACHE_VERSION, **asdict(self)}, sizes,
                              {s: self.frames_per_system(s) for s in self.splits}, partial(self.frames_fn(), spec=self),
                              workers=workers, root=root)


@dataclass(frozen=True)
class XTBMoleculesSpec(_XTBData, TrajectoryLengths):
    """Everything that determines the generated reactive-molecule files (hashed into the cache key).

    ``sizes``: split → frames. Trajectory lengths as in the EMT trajectory pool
    (:class:`~al_lightning.data.synthetic.TrajectoryLengths`); ``path_images`` frames of a
    reaction path lead them. MD: ``md_timestep_fs`` steps, a frame every ``md_steps_between_frames``.
    ``pool_bias``: molecule SMILES or kind name → relative weight of pool draws (a biased pool).
    """

    sizes: Dict[str, int] = field(default_factory=_default_sizes)
    pool_bias: Dict[str, float] = field(default_factory=dict)
    path_images: int = 8
    md_temperature_K: Tuple[float, float] = (1000.0, 3000.0)
    neb_steps: int = 25
    path_md_temperature_K: Tuple[float, float] = (500.0, 1500.0)
    max_force: float = 25.0

    cache_name = "xtb_molecules"
    splits = SPLITS

    def __post_init__(self) -> None:
        check_sizes("xTB molecules", self.sizes, SPLITS)
        self.check_lengths("xTB molecules")
        if self.path_images < 2:
            raise ValueError(f"xTB molecules: path_images must be >= 2, got {self.path_images}")
        unknown_bias = set(self.pool_bias) - set(ID_MOLECULES) - set(ID_KINDS)
        if unknown_bias:
            raise ValueError(f"xTB molecules pool_bias: unknown molecule/kind {sorted(unknown_bias)}")

    def molecule_lists(self):
        return [ID_MOLECULES, OOD_MOLECULES]

    def frames_per_system(self, split: str) -> float:
        return self.traj_frames_mean if split in ("pool", "test_id_frames") else self.eval_frames_per_system

    def frames_fn(self):
        return system_frames


def _rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, 200 + SPLITS.index(split) if split in SPLITS else 300, index, stream])


def _group_sites(smiles: str, template: str, split: str) -> List[Tuple[int, ...]]:
    """The sites of ``template`` on ``smiles`` that ``split`` may use (split by reaction: a
    reaction hashes to the held-out third or to the pool's two thirds, whatever the seed)."""
    sites = template_sites(smiles, template)
    if split not in ("pool", "initial") + HELD_OUT:
        return sites

    def held_out(site) -> bool:
        return int(hashlib.sha256(f"{smiles}|{template}|{site}".encode()).hexdigest(), 16) % 3 == 2

    return [s for s in sites if held_out(s) == (split in HELD_OUT)]


def choose_system(split: str, index: int, spec: XTBMoleculesSpec) -> Tuple[str, str, Tuple[int, ...]]:
    """(smiles, kind, site) of system ``index`` of ``split``: kinds in turn, molecules round robin
    among those where the kind has a site for this split (weighted draws for a biased pool)."""
    rng = _rng(spec.seed, split, index)
    kinds = (OOD_TEMPLATE,) if split == "test_ood_rxn" else ID_KINDS
    molecules = OOD_MOLECULES if split == "test_ood_mol" else ID_MOLECULES
    bias = spec.pool_bias if split == "pool" else {}
    kind = kinds[rng.choice(len(kinds), p=_weights(kinds, bias))] if bias else kinds[index % len(kinds)]
    if kind == "md":
        candidates = list(molecules)
    else:
        candidates = [m for m in molecules if _group_sites(m, kind, split)]
        if not candidates:
            raise ValueError(f"xTB molecules: no molecule has a {kind!r} site for split {split!r}")
    if bias:
        smiles = candidates[rng.choice(len(candidates), p=_weights(candidates, bias))]
    else:
        smiles = candidates[(index // len(kinds)) % len(candidates)]
    sites = [()] if kind == "md" else _group_sites(smiles, kind, split)
    return smiles, kind, tuple(sites[rng.integers(len(sites))])


def _weights(names, bias: Dict[str, float]) -> np.ndarray:
    w = np.array([float(bias.get(n, 1.0)) for n in names])
    return w / w.sum()


def relaxed(atoms: Atoms, calculator, steps: int, fmax: float = 0.05, constraint=None) -> Atoms:
    """Copy of ``atoms`` after at most ``steps`` BFGS steps (``constraint`` held, then removed)."""
    from ase.optimize import BFGS

    work = atoms.copy()
    if constraint is not None:
        work.set_constraint(constraint)
    work.calc = calculator(work)
    BFGS(work, logfile=None, maxstep=0.1).run(fmax=fmax, steps=steps)
    out = atoms.copy()
    out.set_positions(work.get_positions(), apply_constraint=False)
    return out


def _h_shift_path(start: Atoms, site, n: int, spec: XTBMoleculesSpec, calc) -> Tuple[List[Atoms], bool]:
    """(frames, converged): xTB NEB (IDPP start) from ``start`` to the H-shifted product, relaxed
    with the new H–b bond held (a free relaxation mostly shifts the H back)."""
    from ase.constraints import FixBondLengths
    from ase.mep import NEB
    from ase.optimize import FIRE

    h, a, b = site
    product = start.copy()
    others = [j for i, j in bonds(start) if i == b and j != h] + [i for i, j in bonds(start) if j == b and i != h]
    away = start.positions[b] - start.positions[others].mean(axis=0) if others else start.positions[b] - start.positions[a]
    product.positions[h] = start.positions[b] + 1.05 * away / max(np.linalg.norm(away), 1e-6)
    product = relaxed(product, calc, steps=60, fmax=0.1, constraint=FixBondLengths([(h, b)]))
    images = [start.copy() for _ in range(max(n - 1, 1) + 1)] + [product.copy()]
    neb = NEB(images, method="improvedtangent")  # ASE's default since 3.26, named: no warning
    neb.interpolate(method="idpp")
    for image in images:
        image.calc = calc(image)
    converged = FIRE(neb, logfile=None).run(fmax=0.5, steps=spec.neb_steps)
    return [label_frame(im, "path", calc) for im in images[1:]][:n], bool(converged)


def _scan_path(start: Atoms, site, n: int, kind: str, calc) -> List[Atoms]:
    """Relaxed bond-stretch scan (dissociation, ring opening) or rigid rotation (isomerisation)."""
    from ase.constraints import FixBondLengths

    frames, work = [], start.copy()
    if kind == "isomerisation":
        a, b, c, d = site
        mask, phi0 = side_of(start, b, c), start.get_dihedral(a, b, c, d)
        for k in range(1, n + 1):
            work.set_dihedral(a, b, c, d, phi0 + 180.0 * k / n, mask=mask)
            frames.append(label_frame(work, "path", calc))
        return frames
    i, j = site
    mask = None if kind == "ring_opening" else side_of(start, i, j)
    d0 = start.get_distance(i, j)
    for k in range(1, n + 1):
        work.set_distance(i, j, d0 + 2.0 * k / n, fix=0 if mask is not None else 0.5,
                          mask=None if mask is None else mask.tolist())
        work = relaxed(work, calc, steps=6, fmax=0.2, constraint=FixBondLengths([(i, j)]))
        frames.append(label_frame(work, "path", calc))
    return frames


def system_frames(split: str, index: int, spec: XTBMoleculesSpec) -> List[Atoms]:
    """All kept frames of one system (max |F| <= ``spec.max_force``), with their ``info``."""
    smiles, kind, site = choose_system(split, index, spec)
    rng = _rng(spec.seed, split, index, stream=1)
    calc = partial(xtb_calculator, accuracy=spec.accuracy)
    n_total = trajectory_length(index, spec)
    if split not in ("pool", "test_id_frames"):
        n_total = min(n_total, 4 * spec.eval_frames_per_system)
    frames, failures, path_failed, reference = [], 0, False, set()
    try:
        start = relaxed(embed(smiles, int(rng.integers(2**31))), calc, steps=100)
        reference, md_from, md_T = bonds(start), start, spec.md_temperature_K
        if kind != "md":
            n_path = min(spec.path_images, n_total)
            if kind == "h_shift":
                path, converged = _h_shift_path(start, site, n_path, spec, calc)
                path_failed = not converged
            else:
                path = _scan_path(start, site, n_path, kind, calc)
            frames += path
            if path:
                md_from = max(path, key=lambda f: f.info[K.REF_ENERGY])
                md_T = spec.path_md_temperature_K
        n_md = n_total - len(frames)
        if n_md > 0:
            frames += langevin_frames(md_from, n_md, float(rng.uniform(*md_T)), spec.md_steps_between_frames, rng,
                                      calculator=calc, timestep_fs=spec.md_timestep_fs)
    except CalculationFailed:  # an SCF failure ends the trajectory here
        failures += 1
    except RuntimeError:  # ASE's RATTLE (a held bond length) did not converge: the path ends here
        path_failed = True
    return _finish(frames, split, index, spec, rng, reference, smiles, kind, failures, path_failed)


def _finish(frames, split, index, spec, rng, reference, smiles, kind, failures, path_failed) -> List[Atoms]:
    kept = [f for f in frames if np.linalg.norm(f.arrays[K.REF_FORCES], axis=1).max(initial=0.0) <= spec.max_force]
    dropped = len(frames) - len(kept)
    if split not in ("pool", "test_id_frames") and len(kept) > spec.eval_frames_per_system:
        pick = np.sort(rng.choice(len(kept), size=spec.eval_frames_per_system, replace=False))
        kept = [kept[i] for i in pick]
    for n, f in enumerate(kept):
        change = bond_change(f, reference)
        f.info.update({K.SYSTEM_ID: index, "split": split, "system_key": f"{split}/{index}", "smiles": smiles,
                       "template": "none" if kind == "md" else kind, "bond_change": change,
                       "reactive": bool(change > 0)})
        if n == 0:
            f.info.update({"scf_failures": failures, "path_failed": bool(path_failed),
                           "dropped_frames": dropped})
    return kept


# ---------------------------------------------------------------- the backbone's data
FOUNDATION_SPLITS = ("train", "val")


def _default_foundation_sizes() -> Dict[str, int]:
    return {"train": 3000, "val": 300}


@dataclass(frozen=True)
class XTBFoundationSpec(_XTBData):
    """The molecular backbone's pretraining data (hashed into the cache key): per system one
    RDKit conformer of a FOUNDATION_MOLECULES entry (round robin), briefly xTB-relaxed, then
    ``rattle_frames`` rattles and ``md_frames`` frames of a 300–600 K Langevin run; frames with a
    broken or formed bond or max |F| > ``max_force`` are dropped. ``train``/``val``: disjoint systems."""

    sizes: Dict[str, int] = field(default_factory=_default_foundation_sizes)
    relax_steps: int = 30
    max_force: float = 10.0
    cache_name = "xtb_foundation"  # class attributes (not fields) between the field groups
    splits = FOUNDATION_SPLITS
    md_frames: int = 4
    md_temperature_K: Tuple[float, float] = (300.0, 600.0)
    rattle_frames: int = 2
    rattle_std: Tuple[float, float] = (0.01, 0.06)

    def __post_init__(self) -> None:
        check_sizes("xTB foundation", self.sizes, FOUNDATION_SPLITS, required=("train",))
        if self.rattle_frames < 0 or self.md_frames < 0 or self.rattle_frames + self.md_frames < 1:
            raise ValueError("xTB foundation: rattle_frames, md_frames must be >= 0 and not both 0")

    def molecule_lists(self):
        return FOUNDATION_MOLECULES

    def frames_per_system(self, split: str) -> float:
        return self.rattle_frames + self.md_frames

    def frames_fn(self):
        return foundation_frames


def foundation_frames(split: str, index: int, spec: XTBFoundationSpec) -> List[Atoms]:
    """Near-equilibrium frames of one foundation system (see :class:`XTBFoundationSpec`)."""
    rng = np.random.default_rng([spec.seed, 400 + FOUNDATION_SPLITS.index(split), index])
    smiles = FOUNDATION_MOLECULES[index % len(FOUNDATION_MOLECULES)]
    calc = partial(xtb_calculator, accuracy=spec.accuracy)
    frames, reference = [], set()
    try:
        start = relaxed(embed(smiles, int(rng.integers(2**31))), calc, steps=spec.relax_steps)
        reference = bonds(start)
        for _ in range(spec.rattle_frames):
            frame = start.copy()
            frame.positions += rng.normal(0.0, rng.uniform(*spec.rattle_std), size=(len(frame), 3))
            frames.append(label_frame(frame, "rattle", calc))
        if spec.md_frames:
            frames += langevin_frames(start, spec.md_frames, float(rng.uniform(*spec.md_temperature_K)),
                                      spec.md_steps_between_frames, rng, calculator=calc,
                                      timestep_fs=spec.md_timestep_fs)
    except CalculationFailed:
        pass  # an SCF failure ends the system there
    kept = [f for f in frames if bond_change(f, reference) == 0
            and np.linalg.norm(f.arrays[K.REF_FORCES], axis=1).max(initial=0.0) <= spec.max_force]
    for f in kept:
        f.info.update({K.SYSTEM_ID: index, "split": split, "smiles": smiles})
    return kept
