"""HDF5 reaction datasets (docs/design.md §7): Transition1x and RGD1, same protocol as ``StructureFile``.

Transition1x (``Transition1x.h5``): ``/{data,train,val,test}/{formula}/{rxn}/`` holding
``atomic_numbers`` (N,), ``positions`` (M, N, 3) Å, ``wB97x_6-31G(d).energy`` (M,) eV and
``wB97x_6-31G(d).forces`` (M, N, 3) eV/Å; each reaction group also has ``reactant``,
``product`` and ``transition_state`` subgroups (M = 1) with the same datasets.

RGD1 (``RGD1_CHNO.h5``): one group per reaction channel (``MR_<n>_<ts>``) holding
``elements`` (N,) atomic numbers, geometries ``RG``/``PG``/``TSG`` (N, 3) Å, scalar
energies ``R_E``/``P_E``/``TS_E`` (single point), ``*_H`` (enthalpy), ``*_F`` (Gibbs) in
Hartree, and ``Rsmiles``/``Psmiles``. No forces: readers expose ``has_forces = False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Hartree

from al_lightning.data.io import DataError, normalise
from al_lightning.data.source import StructureSource

T1X_ENERGY = "wB97x_6-31G(d).energy"
T1X_FORCES = "wB97x_6-31G(d).forces"
T1X_SPLITS = ("data", "train", "val", "test")
T1X_ENDPOINTS = ("reactant", "product", "transition_state")
RGD1_KINDS = {"R": "RG", "P": "PG", "TS": "TSG"}  # frame kind -> geometry dataset


class _H5Reader(StructureSource):
    """Shared plumbing: a per-process ``h5py.File`` handle (h5py handles survive no fork)."""

    path: Path

    def _h5(self):
        import h5py

        if getattr(self, "_file", None) is None or self._pid != os.getpid():
            try:
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as exc:
                raise DataError(f"{self.path}: unreadable HDF5 ({exc})") from None
        return self._file

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def _check_path(self) -> None:
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found")


def _sorted_groups(group, where: str) -> List[str]:
    """Sorted member names of ``group``; each must be a readable group (a dangling link is not)."""
    import h5py

    try:
        members = list(group.items())
    except (KeyError, OSError, RuntimeError) as exc:
        raise DataError(f"{where}: unreadable group ({exc})") from None
    for name, obj in members:
        if not isinstance(obj, h5py.Group):
            what = "a dataset" if isinstance(obj, h5py.Dataset) else "a broken link"
            raise DataError(f"{where}/{name}: unreadable group (found {what})".replace("//", "/"))
    return sorted(name for name, _ in members)


def t1x_frame_count(grp, where: str, energy_key: str, forces_key: str, require_labels: bool) -> int:
    """Frames M of one Transition1x group after checking its datasets' presence and shapes."""
    try:
        names = set(grp.keys())
        needed = ["atomic_numbers", "positions"] + ([energy_key, forces_key] if require_labels else [])
        missing = [k for k in needed if k not in names]
        if missing:
            raise DataError(f"{where}: missing dataset(s) {missing}")
        n_shape, p_shape = grp["atomic_numbers"].shape, grp["positions"].shape
        e_shape = grp[energy_key].shape if energy_key in names else None
        f_shape = grp[forces_key].shape if forces_key in names else None
    except DataError:
        raise
    except (KeyError, OSError, RuntimeError) as exc:
        raise DataError(f"{where}: unreadable group ({exc})") from None
    if len(n_shape) != 1 or n_shape[0] == 0:
        raise DataError(f"{where}: atomic_numbers has shape {n_shape}, expected (N,) with N > 0")
    n = n_shape[0]
    if len(p_shape) != 3 or p_shape[1:] != (n, 3):
        raise DataError(f"{where}: positions has shape {p_shape}, expected (M, {n}, 3)")
    m = p_shape[0]
    if e_shape is not None and e_shape != (m,):
        raise DataError(f"{where}: {energy_key} has shape {e_shape}, expected ({m},)")
    if f_shape is not None and f_shape != (m, n, 3):
        raise DataError(f"{where}: {forces_key} has shape {f_shape}, expected ({m}, {n}, 3)")
    return m


class T1xFile(_H5Reader):
    """Transition1x split as a flat, deterministic list of frames.

    Order: formulas sorted, reactions sorted, then frames in file order (with
    ``include_endpoints``, each reaction's ``reactant``/``product``/``transition_state``
    frames follow its path frames). ``info``: ``formula``, ``rxn``, ``frame`` (index within
    its group) and ``t1x_group`` ("path" or the endpoint name). Molecules: no cell, no pbc.
    ``energy_key``/``forces_key`` name the HDF5 datasets.
    """

    format = "t1x"
    default_energy_key, default_forces_key = T1X_ENERGY, T1X_FORCES

    def __init__(self, path: "str | Path", split: str = "train", energy_key: str = T1X_ENERGY,
                 forces_key: str = T1X_FORCES, require_labels: bool = True,
                 elements: Optional[Sequence[int]] = None, include_endpoints: bool = False) -> None:
        self.path, self.split = Path(path), split
        self.energy_key, self.forces_key = energy_key, forces_key
        self.require_labels, self.elements = require_labels, elements
        self.include_endpoints = include_endpoints
        self._file = None
        self._check_path()
        self._groups, counts = self._build_index()
        if not self._groups or sum(counts) == 0:
            raise DataError(f"{self.path}: split '{split}' holds no frames")
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _build_index(self) -> Tuple[List[Tuple[str, str, str]], List[int]]:
        root = self._h5()
        if self.split not in root:
            raise DataError(f"{self.path}: no split group '/{self.split}' (have {sorted(root.keys())})")
        groups: List[Tuple[str, str, str]] = []
        counts: List[int] = []
        for formula in _sorted_groups(root[self.split], f"{self.path}: /{self.split}"):
            where = f"{self.path}: /{self.split}/{formula}"
            for rxn in _sorted_groups(root[self.split][formula], where):
                subs = [""] + (list(T1X_ENDPOINTS) if self.include_endpoints else [])
                for sub in subs:
                    name = f"/{self.split}/{formula}/{rxn}" + (f"/{sub}" if sub else "")
                    if sub and sub not in root[self.split][formula][rxn]:
                        raise DataError(f"{self.path}: {name}: missing endpoint group")
                    m = t1x_frame_count(root[name], f"{self.path}: {name}", self.energy_key,
                                        self.forces_key, self.require_labels)
                    groups.append((formula, rxn, sub))
                    counts.append(m)
        return groups, counts

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> Tuple[str, str, str, int]:
        """Global id -> (formula, rxn, endpoint or "", frame within the group)."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: record {i} out of range (0..{len(self) - 1})")
        g = int(np.searchsorted(self._starts, i, side="right")) - 1
        return (*self._groups[g], int(i - self._starts[g]))

    def atom_counts(self) -> np.ndarray:
        """Atoms per frame from each group's ``atomic_numbers`` length (metadata; no frame is read)."""
        root = self._h5()
        sizes = [root[f"/{self.split}/{f}/{r}" + (f"/{sub}" if sub else "")]["atomic_numbers"].shape[0]
                 for f, r, sub in self._groups]
        return np.repeat(np.asarray(sizes, dtype=np.int64), np.diff(self._starts))

    def _where(self, formula: str, rxn: str, sub: str, frame: int) -> str:
        name = f"/{self.split}/{formula}/{rxn}" + (f"/{sub}" if sub else "")
        return f"{self.path}: {name}: frame {frame}"

    def raw(self, i: int) -> Atoms:
        """Frame ``i``: Atoms with a SinglePointCalculator holding energy/forces as stored."""
        formula, rxn, sub, frame = self.locate(i)
        name = f"/{self.split}/{formula}/{rxn}" + (f"/{sub}" if sub else "")
        try:
            grp = self._h5()[name]
            atoms = Atoms(numbers=np.asarray(grp["atomic_numbers"][()], dtype=int),
                          positions=np.asarray(grp["positions"][frame], dtype=float), pbc=False)
            results = {}
            if self.energy_key in grp:
                results["energy"] = float(grp[self.energy_key][frame])
            if self.forces_key in grp:
                results["forces"] = np.asarray(grp[self.forces_key][frame], dtype=float)
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"{self._where(formula, rxn, sub, frame)}: unreadable ({exc})") from None
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(formula=formula, rxn=rxn, frame=frame, t1x_group=sub or "path")
        return atoms

    def __getitem__(self, i: int) -> Atoms:
        return normalise(self.raw(i), self._where(*self.locate(i)), "energy", "forces",
                         self.require_labels, self.require_labels, self.elements)


def _scalar(ds, where: str, name: str) -> float:
    value = np.asarray(ds[()], dtype=float).reshape(-1)
    if value.size != 1:
        raise DataError(f"{where}: {name} has {value.size} values, expected one")
    return float(value[0])


def _text(grp, name: str) -> Optional[str]:
    if name not in grp:
        return None
    value = grp[name][()]
    value = value.reshape(-1)[0] if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


class RGD1File(_H5Reader):
    """RGD1 reactions as frames: for each reaction (sorted names), one frame per kind.

    ``kinds`` picks among "R", "P", "TS" (geometries ``RG``/``PG``/``TSG``); ``energy_key``
    picks the energy column suffix: "E" (single point, default), "H" (enthalpy) or "F"
    (Gibbs free energy), read from ``<kind>_<energy_key>`` in Hartree and returned in eV.
    No forces (``has_forces = False``). ``info``: ``rxn``, ``rgd1_kind``, ``smiles``.
    Groups are validated when read (177k reactions: opening stays fast).
    """

    format = "rgd1"
    has_forces = False
    default_energy_key, default_forces_key = "E", None  # single point; "H", "F" also valid

    @classmethod
    def open(cls, path, energy_key=None, forces_key=None, require_labels=True, elements=None, **options):
        if forces_key is not None:
            raise DataError(f"{path}: RGD1 has no forces (got forces_key={forces_key!r})")
        return cls(path, energy_key=energy_key or cls.default_energy_key, require_labels=require_labels,
                   elements=elements, **options)

    def __init__(self, path: "str | Path", energy_key: str = "E", require_labels: bool = True,
                 elements: Optional[Sequence[int]] = None, kinds: Sequence[str] = ("R", "P", "TS")) -> None:
        self.path, self.energy_key, self.forces_key = Path(path), energy_key, None
        self.require_labels, self.elements = require_labels, elements
        bad = [k for k in kinds if k not in RGD1_KINDS]
        if bad or not kinds:
            raise DataError(f"{self.path}: RGD1 kinds must be among {list(RGD1_KINDS)}, got {list(kinds)}")
        self.kinds = tuple(kinds)
        self._file = None
        self._check_path()
        self._rxns = _sorted_groups(self._h5(), f"{self.path}: /")
        if not self._rxns:
            raise DataError(f"{self.path}: no reaction groups")

    def __len__(self) -> int:
        return len(self._rxns) * len(self.kinds)

    def atom_counts(self) -> np.ndarray:
        """Atoms per frame from each reaction's ``elements`` length (metadata; no geometry is read)."""
        root = self._h5()
        sizes = [int(np.prod(root[rxn]["elements"].shape)) for rxn in self._rxns]
        return np.repeat(np.asarray(sizes, dtype=np.int64), len(self.kinds))

    def locate(self, i: int) -> Tuple[str, str]:
        """Global id -> (reaction group name, kind)."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: record {i} out of range (0..{len(self) - 1})")
        r, k = divmod(int(i), len(self.kinds))
        return self._rxns[r], self.kinds[k]

    def raw(self, i: int) -> Atoms:
        """Frame ``i`` with its energy in eV in ``info["energy"]`` (no calculator, no forces)."""
        rxn, kind = self.locate(i)
        where = f"{self.path}: /{rxn}: {kind}"
        geo, e_name = RGD1_KINDS[kind], f"{kind}_{self.energy_key}"
        try:
            grp = self._h5()[rxn]
            missing = [k for k in ("elements", geo) + ((e_name,) if self.require_labels else ()) if k not in grp]
            if missing:
                raise DataError(f"{where}: missing dataset(s) {missing}")
            numbers = np.asarray(grp["elements"][()], dtype=int).reshape(-1)
            positions = np.asarray(grp[geo][()], dtype=float)
            energy = _scalar(grp[e_name], where, e_name) * Hartree if e_name in grp else None
            smiles = _text(grp, "Psmiles" if kind == "P" else "Rsmiles")
            if kind == "TS":
                product = _text(grp, "Psmiles")
                smiles = f"{smiles}>>{product}" if smiles is not None and product is not None else None
        except DataError:
            raise
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as exc:
            raise DataError(f"{where}: unreadable ({exc})") from None
        if positions.shape != (len(numbers), 3) or len(numbers) == 0:
            raise DataError(f"{where}: {geo} has shape {positions.shape}, expected ({len(numbers)}, 3)")
        atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
        atoms.info.update(rxn=rxn, rgd1_kind=kind)
        if smiles is not None:
            atoms.info["smiles"] = smiles
        if energy is not None:
            atoms.info["energy"] = energy
        return atoms

    def __getitem__(self, i: int) -> Atoms:
        rxn, kind = self.locate(i)
        return normalise(self.raw(i), f"{self.path}: /{rxn}: {kind}", "energy", "forces",
                         self.require_labels, False, self.elements)
