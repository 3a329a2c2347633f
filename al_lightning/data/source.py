"""The protocol of every structure reader, as a base class: :class:`StructureSource`.

Built-in sources (named by ``data.format`` or a file's ``format``): ``ase`` (any ASE-readable
file, :class:`~al_lightning.data.io.StructureFile`), ``oc20`` (OC20 S2EF chunks), ``t1x``
(Transition1x HDF5), ``rgd1`` (RGD1 HDF5, energies only). Your own format: subclass
:class:`StructureSource` and give its import path as the format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional, Sequence, Union

import numpy as np
from ase import Atoms

from al_lightning import keys as K

PathLike = Union[str, Path]


class StructureSource(ABC):
    """Indexed random access to labeled (or unlabeled pool) structures.

    ``len(s)``; ``s.raw(i)``: record ``i`` as stored; ``s[i]``: normalised (``info["REF_energy"]``
    in eV, raw ``arrays["REF_forces"]`` in eV/Å, labels checked when ``require_labels``; see
    :func:`al_lightning.data.io.normalise`); ``iter(s)``. Attributes: ``path``, ``energy_key``,
    ``forces_key``, ``require_labels``, ``elements`` (allowed atomic numbers or None),
    ``has_forces`` (False for energy-only data: the force loss switches off).
    """

    format: ClassVar[str] = ""  # the short name in data.format ("" for a class named by import path)
    default_energy_key: ClassVar[Optional[str]] = K.REF_ENERGY
    default_forces_key: ClassVar[Optional[str]] = K.REF_FORCES
    has_forces = True
    path: Any
    energy_key: Optional[str]
    forces_key: Optional[str]
    require_labels: bool
    elements: Optional[Sequence[int]]

    @classmethod
    def detect(cls, path: Union[PathLike, Sequence[PathLike]]) -> bool:
        """Whether ``data.format: auto`` should read ``path`` with this source."""
        return False

    @classmethod
    def open(cls, path, energy_key: Optional[str] = None, forces_key: Optional[str] = None,
             require_labels: bool = True, elements: Optional[Sequence[int]] = None, **options: Any
             ) -> "StructureSource":
        """The source for ``path``; ``energy_key``/``forces_key`` None = this format's defaults;
        ``options``: the format's own (e.g. t1x ``split``)."""
        return cls(path, energy_key=energy_key or cls.default_energy_key,
                   forces_key=forces_key or cls.default_forces_key, require_labels=require_labels,
                   elements=elements, **options)

    @abstractmethod
    def __len__(self) -> int:
        """Number of records."""

    @abstractmethod
    def raw(self, i: int) -> Atoms:
        """Record ``i`` as stored."""

    @abstractmethod
    def __getitem__(self, i: int) -> Atoms:
        """Record ``i`` normalised (labels under mace's REF keys, checked)."""

    def __iter__(self) -> Iterator[Atoms]:
        return (self[i] for i in range(len(self)))

    def atom_counts(self) -> np.ndarray:
        """Atoms per record (n,) int64 (the pool pass's memory budget). This default reads every
        record once; a source that can count without reading overrides it."""
        return np.fromiter((len(self.raw(i)) for i in range(len(self))), dtype=np.int64, count=len(self))
