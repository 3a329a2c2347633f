"""One entry point for every structure source (docs/design.md §7): :func:`open_structures`.

All readers share ``StructureFile``'s protocol: ``len(r)``, ``r.raw(i)`` (as stored),
``r[i]`` (normalised: ``info["REF_energy"]`` in eV, raw ``arrays["REF_forces"]`` in eV/Å),
``iter(r)``, and the attributes ``path``, ``energy_key``, ``forces_key``,
``require_labels``, ``elements``, ``has_forces`` (False for energy-only data such as RGD1:
switch the force loss off). ``StructureFile`` has no ``has_forces``; use
:func:`has_forces`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from al_lightning import keys as K
from al_lightning.data.hdf5 import T1X_ENERGY, T1X_FORCES, RGD1File, T1xFile
from al_lightning.data.io import DataError, StructureFile
from al_lightning.data.oc20 import XYZ_SUFFIX, OC20S2EF

FORMATS = ("auto", "ase", "oc20", "t1x", "rgd1")
HDF5_SUFFIXES = (".h5", ".hdf5")
PathLike = Union[str, Path]


def detect_format(path: Union[PathLike, Sequence[PathLike]]) -> str:
    """"oc20" for a folder of ``*.extxyz.xz`` / a ``.extxyz.xz`` file / a list of those,
    "ase" for anything else; HDF5 files raise DataError (Transition1x or RGD1: name it)."""
    if isinstance(path, (list, tuple)):
        if path and all(str(p).endswith(XYZ_SUFFIX) or Path(p).is_dir() for p in path):
            return "oc20"
        raise DataError(f"{path}: a list of paths is only read as OC20 S2EF chunks ('*{XYZ_SUFFIX}' or folders)")
    p = Path(path)
    if p.name.lower().endswith(HDF5_SUFFIXES):
        raise DataError(f"{p}: HDF5 layout is ambiguous; set fmt='t1x' (Transition1x) or fmt='rgd1' (RGD1)")
    if p.name.endswith(XYZ_SUFFIX) or (p.is_dir() and any(c.name.endswith(XYZ_SUFFIX) for c in p.iterdir())):
        return "oc20"
    return "ase"


def open_structures(path: Union[PathLike, Sequence[PathLike]], fmt: str = "auto",
                    energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                    require_labels: bool = True, elements: Optional[Sequence[int]] = None, **fmt_kwargs):
    """The reader for ``path``; ``energy_key``/``forces_key`` None = the format's default.

    Defaults: ase ``REF_energy``/``REF_forces``; oc20 ``energy``/``forces`` (calculator
    fields); t1x the ``wB97x_6-31G(d)`` datasets; rgd1 ``"E"`` (single point; "H", "F"
    also valid) and no forces. ``fmt_kwargs`` go to the reader (t1x: ``split``,
    ``include_endpoints``; rgd1: ``kinds``).
    """
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format '{fmt}' (choose from {list(FORMATS)})")
    fmt = detect_format(path) if fmt == "auto" else fmt
    common = dict(require_labels=require_labels, elements=elements)
    if fmt == "oc20":
        return OC20S2EF(path, energy_key or "energy", forces_key or "forces", **common, **fmt_kwargs)
    if fmt == "t1x":
        return T1xFile(path, energy_key=energy_key or T1X_ENERGY, forces_key=forces_key or T1X_FORCES,
                       **common, **fmt_kwargs)
    if fmt == "rgd1":
        if forces_key is not None:
            raise DataError(f"{path}: RGD1 has no forces (got forces_key={forces_key!r})")
        return RGD1File(path, energy_key=energy_key or "E", **common, **fmt_kwargs)
    if isinstance(path, (list, tuple)):
        raise DataError(f"{path}: format '{fmt}' reads one file, got a list")
    if fmt_kwargs:
        raise DataError(f"{path}: unexpected options {sorted(fmt_kwargs)} for an ASE-readable file")
    return StructureFile(path, energy_key or K.REF_ENERGY, forces_key or K.REF_FORCES, **common)


def has_forces(reader) -> bool:
    """Whether ``reader`` can supply force labels (False for energy-only data, e.g. RGD1)."""
    return bool(getattr(reader, "has_forces", True))


__all__ = ["open_structures", "detect_format", "has_forces", "OC20S2EF", "T1xFile", "RGD1File", "FORMATS"]
