"""One entry point for every structure source (docs/design.md §7): :func:`open_structures`.

Every reader is a :class:`~al_lightning.data.source.StructureSource`; ``data.format`` (or a file's
own ``format``) names a built-in one (``ase``, ``oc20``, ``t1x``, ``rgd1``), ``auto`` (each
source's ``detect``, else ``ase``), or the import path of your own subclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Type, Union

from al_lightning.data.hdf5 import RGD1File, T1xFile
from al_lightning.data.io import DataError, StructureFile
from al_lightning.data.oc20 import XYZ_SUFFIX, OC20S2EF
from al_lightning.data.source import PathLike, StructureSource
from al_lightning.plugins import import_object

SOURCES: Dict[str, Type[StructureSource]] = {c.format: c for c in (StructureFile, OC20S2EF, T1xFile, RGD1File)}
FORMATS = ("auto", *SOURCES)
HDF5_SUFFIXES = (".h5", ".hdf5")


def detect_format(path: Union[PathLike, Sequence[PathLike]]) -> str:
    """The first built-in source whose ``detect`` accepts ``path``, else "ase"; HDF5 files raise
    DataError (Transition1x or RGD1: name it), so does a list that no source reads."""
    found = [name for name, cls in SOURCES.items() if cls.detect(path)]
    if found:
        return found[0]
    if isinstance(path, (list, tuple)):
        raise DataError(f"{path}: a list of paths is only read as OC20 S2EF chunks ('*{XYZ_SUFFIX}' or folders)")
    if Path(path).name.lower().endswith(HDF5_SUFFIXES):
        raise DataError(f"{path}: HDF5 layout is ambiguous; set fmt='t1x' (Transition1x) or fmt='rgd1' (RGD1)")
    return "ase"


def source_class(fmt: str, path="data") -> Type[StructureSource]:
    """The source a format names: a built-in name or the import path of a StructureSource subclass."""
    if fmt in SOURCES:
        return SOURCES[fmt]
    if "." in fmt:
        try:
            cls = import_object(fmt, what="format", example="my_package.readers.MySource")
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None
        if isinstance(cls, type) and issubclass(cls, StructureSource):
            return cls
        raise DataError(f"{path}: format {fmt!r} is not a StructureSource subclass")
    raise DataError(f"{path}: unknown format '{fmt}' (choose from {list(FORMATS)} or a StructureSource import path)")


def open_structures(path: Union[PathLike, Sequence[PathLike]], fmt: str = "auto",
                    energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                    require_labels: bool = True, elements: Optional[Sequence[int]] = None, **fmt_kwargs):
    """The reader for ``path``; ``energy_key``/``forces_key`` None = the format's default.

    Defaults: ase ``REF_energy``/``REF_forces``; oc20 ``energy``/``forces`` (calculator
    fields); t1x the ``wB97x_6-31G(d)`` datasets; rgd1 ``"E"`` (single point; "H", "F"
    also valid) and no forces. ``fmt_kwargs`` go to the reader (t1x: ``split``,
    ``include_endpoints``; rgd1: ``kinds``).
    """
    cls = source_class(detect_format(path) if fmt == "auto" else fmt, path)
    return cls.open(path, energy_key, forces_key, require_labels=require_labels, elements=elements, **fmt_kwargs)


def has_forces(reader) -> bool:
    """Whether ``reader`` can supply force labels (False for energy-only data, e.g. RGD1)."""
    return bool(getattr(reader, "has_forces", True))


__all__ = ["open_structures", "detect_format", "source_class", "has_forces", "StructureSource", "OC20S2EF", "T1xFile",
           "RGD1File", "FORMATS", "SOURCES"]
