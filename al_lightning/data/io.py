"""Structure readers (docs/design.md §7): any ASE format, indexed random access, clear errors.

Every reader returns ``Atoms`` *normalised*: the energy label (eV) in
``info["REF_energy"]``, raw forces (eV/Å, constraints not applied) in
``arrays["REF_forces"]``, whatever keys the file used. Bad input raises :class:`DataError`
with one line naming the file, the record and what is wrong.
"""

from __future__ import annotations

import hashlib
import io as _io
import math
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from al_lightning import keys as K
from al_lightning.data.source import StructureSource

EXTXYZ_SUFFIXES = (".xyz", ".extxyz")


class DataError(ValueError):
    """Malformed or missing input data; the message is one line naming file and record."""


def free_mask(atoms: Atoms) -> np.ndarray:
    """(N,) bool: True for atoms not fixed by a ``FixAtoms`` constraint."""
    mask = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.get_indices()] = False
    return mask


def _calc_result(atoms: Atoms, name: str):
    calc = atoms.calc
    if calc is None or not hasattr(calc, "results"):
        return None
    return calc.results.get(name)


def normalise(
    atoms: Atoms,
    where: str,
    energy_key: str = K.REF_ENERGY,
    forces_key: str = K.REF_FORCES,
    require_energy: bool = True,
    require_forces: bool = True,
    elements: Optional[Iterable[int]] = None,
) -> Atoms:
    """Move labels to the REF keys and validate them; ``where`` = "file: record i".

    Energy is looked up in ``info[energy_key]``, then in the calculator's results (ASE puts
    ``energy``/``forces`` there: what ``ase.io.write`` stores after a calculation); forces in
    ``arrays[forces_key]`` then the calculator's raw results (never ``get_forces()``, which zeroes
    fixed atoms).
    """
    energy = atoms.info.pop(energy_key, None)
    if energy is None:
        energy = _calc_result(atoms, energy_key if energy_key == "free_energy" else "energy")
    forces = atoms.arrays.pop(forces_key, None) if forces_key in atoms.arrays else None
    if forces is None:
        forces = _calc_result(atoms, "forces")
    atoms.calc = None
    if len(atoms) == 0:
        raise DataError(f"{where}: structure has no atoms")
    if elements is not None:
        unknown = sorted(set(atoms.numbers.tolist()) - set(elements))
        if unknown:
            raise DataError(f"{where}: unknown element(s) Z={unknown} (allowed: {sorted(set(elements))})")
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{where}: positions contain NaN/inf")
    if energy is None:
        if require_energy:
            raise DataError(f"{where}: no energy label under key '{energy_key}'")
    else:
        energy = float(np.asarray(energy).reshape(-1)[0]) if np.size(energy) == 1 else energy
        if not isinstance(energy, float):
            raise DataError(f"{where}: energy '{energy_key}' must be one number, got shape {np.shape(energy)}")
        if not math.isfinite(energy):
            raise DataError(f"{where}: energy '{energy_key}' is {energy}")
        atoms.info[K.REF_ENERGY] = energy
    if forces is None:
        if require_forces:
            raise DataError(f"{where}: no forces under key '{forces_key}'")
    else:
        forces = np.asarray(forces, dtype=float)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{where}: forces '{forces_key}' have shape {forces.shape}, expected ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise DataError(f"{where}: forces '{forces_key}' contain NaN/inf")
        atoms.arrays[K.REF_FORCES] = forces
    return atoms


def _index_cache_path(path: Path) -> Path:
    from al_lightning.data.cache import cache_root

    st = path.stat()
    stamp = f"{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"  # ctime, inode: rewrites in place too
    key = hashlib.sha256(f"{path.resolve()}|{stamp}".encode()).hexdigest()[:16]
    return cache_root() / "index" / f"{key}.npy"


def extxyz_offsets(path: Path) -> np.ndarray:
    """Byte offset of every frame of an (ext)xyz file (n,) int64: column 0 of :func:`extxyz_index`."""
    return extxyz_index(path)[:, 0]


def extxyz_index(path: Path) -> np.ndarray:
    """(byte offset, atom count) of every frame of an (ext)xyz file, (n, 2) int64, cached beside the
    dataset cache (an index cached by an older version, offsets only, is rebuilt).

    Raises DataError for an empty file, a bad atom-count line, a truncated last frame (too few lines,
    or a last line cut before its end) or an atom line with another number of columns.
    """
    cached = _index_cache_path(path)
    if cached.exists():
        arr = np.load(cached)
        if arr.ndim == 2:
            return arr
    offsets: List[Tuple[int, int]] = []
    with open(path, "rb") as f:
        while True:
            pos, line = f.tell(), f.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                n = int(line.split()[0])
            except ValueError:
                raise DataError(f"{path}: record {len(offsets)}: expected an atom count, got {line[:40]!r}") from None
            columns = None
            for k in range(n + 1):
                row = f.readline()
                if not row:
                    raise DataError(f"{path}: record {len(offsets)}: truncated ({k} of {n + 1} lines after the count)")
                if not row.endswith(b"\n"):
                    raise DataError(f"{path}: record {len(offsets)}: truncated (its last line has no end: the file was cut "
                                    "while being written?); restore the complete file")
                if k:  # atom lines: as many columns as the record's first atom line
                    width = len(row.split())
                    if columns is not None and width != columns:
                        raise DataError(f"{path}: record {len(offsets)}: atom line {k} has {width} columns, the "
                                        f"record's first has {columns}; restore the complete file")
                    columns = width
            offsets.append((pos, n))
    if not offsets:
        raise DataError(f"{path}: no structures (empty file)")
    arr = np.asarray(offsets, dtype=np.int64)
    from al_lightning.atomic import atomic_write

    atomic_write(cached, lambda fh: np.save(fh, arr), binary=True)
    return arr


class StructureFile(StructureSource):
    """Indexed random access to the structures of one file (extxyz, ASE db, traj, …): ``format: ase``.

    ``file[i]`` reads record ``i`` only (byte offsets for extxyz, row ids for ASE db,
    ``ase.io.Trajectory`` for traj; other formats are read once and held in memory).
    """

    format = "ase"

    def __init__(self, path: "str | Path", energy_key: str = K.REF_ENERGY, forces_key: str = K.REF_FORCES,
                 require_labels: bool = True, elements: Optional[Sequence[int]] = None,
                 require_forces: Optional[bool] = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found")
        self.energy_key, self.forces_key = energy_key, forces_key
        self.require_labels, self.elements = require_labels, elements
        self.require_forces = require_labels if require_forces is None else require_forces
        self._kind = self._detect()
        self._index = extxyz_index(self.path) if self._kind == "extxyz" else None
        self._offsets = None if self._index is None else self._index[:, 0]
        self._db = self._traj = self._frames = None
        if self._kind == "db":
            import ase.db

            self._db = ase.db.connect(str(self.path))
            self._ids = [row.id for row in self._db.select(include_data=False)]
        elif self._kind == "traj":
            from ase.io.trajectory import Trajectory

            self._traj = Trajectory(str(self.path))
        elif self._kind == "other":
            self._frames = self._read_all()
        if len(self) == 0:
            raise DataError(f"{self.path}: no structures (empty file)")

    def _detect(self) -> str:
        name = self.path.name.lower()
        if name.endswith(EXTXYZ_SUFFIXES):
            return "extxyz"
        if name.endswith(".db"):
            return "db"
        if name.endswith(".traj"):
            return "traj"
        return "other"

    def _read_all(self) -> List[Atoms]:
        from ase.io import read

        try:
            return list(read(str(self.path), index=":"))
        except Exception as exc:  # ASE raises many types for unreadable files
            raise DataError(f"{self.path}: unreadable ({type(exc).__name__}: {exc})") from None

    def __len__(self) -> int:
        if self._offsets is not None:
            return len(self._offsets)
        if self._db is not None:
            return len(self._ids)
        if self._traj is not None:
            return len(self._traj)
        return len(self._frames)

    def raw(self, i: int) -> Atoms:
        """Record ``i`` as stored (labels not normalised)."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: record {i} out of range (0..{len(self) - 1})")
        try:
            if self._offsets is not None:
                return self._read_extxyz(i)
            if self._db is not None:
                row = self._db.get(id=self._ids[i])
                atoms = row.toatoms(add_additional_information=False)
                atoms.info.update(row.key_value_pairs)
                for k, v in (row.data or {}).items():
                    (atoms.arrays if np.shape(v)[:1] == (len(atoms),) else atoms.info)[k] = np.asarray(v)
                return atoms
            if self._traj is not None:
                return self._traj[i]
            return self._frames[i].copy()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.path}: record {i}: unreadable ({type(exc).__name__}: {exc})") from None

    def _read_extxyz(self, i: int) -> Atoms:
        from ase.io import read

        with open(self.path, "rb") as f:
            f.seek(int(self._offsets[i]))
            n = int(f.readline().split()[0])
            text = f"{n}\n" + b"".join(f.readline() for _ in range(n + 1)).decode()
        return read(_io.StringIO(text), format="extxyz", index=0)

    def atom_counts(self) -> np.ndarray:
        """Atoms per record (n,) int64: from the byte-offset index for extxyz (no record is read)."""
        if self._index is not None:
            return self._index[:, 1].copy()
        return super().atom_counts()

    def __getitem__(self, i: int) -> Atoms:
        return normalise(self.raw(i), f"{self.path}: record {i}", self.energy_key, self.forces_key,
                         self.require_labels, self.require_forces, self.elements)

    @classmethod
    def open(cls, path, energy_key=None, forces_key=None, require_labels=True, elements=None, **options):
        if isinstance(path, (list, tuple)):
            raise DataError(f"{path}: format 'ase' reads one file, got a list")
        if options:
            raise DataError(f"{path}: unexpected options {sorted(options)} for an ASE-readable file")
        return super().open(path, energy_key, forces_key, require_labels, elements)


def read_structures(path: "str | Path", **kwargs) -> List[Atoms]:
    """All structures of ``path``, normalised and validated (see :class:`StructureFile`)."""
    f = StructureFile(path, **kwargs)
    return [f[i] for i in range(len(f))]


def write_extxyz(path: "str | Path", frames: Sequence[Atoms]) -> None:
    """Write frames atomically (temp file + fsync + rename) with mace's REF keys."""
    from ase.io import write

    from al_lightning.atomic import atomic_write

    atomic_write(path, lambda fh: write(fh, list(frames), format="extxyz"))
