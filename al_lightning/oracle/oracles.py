"""Oracles: ``label(ids, structures) -> labeled Atoms`` (REF_energy / raw REF_forces).

The campaign calls an oracle on rank 0 only and broadcasts its results; every label is
written to disk before it is used (see :mod:`al_lightning.campaign`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from al_lightning import keys as K
from al_lightning.data.io import DataError, StructureFile, normalise
from al_lightning.data.readers import has_forces
from al_lightning.oracle.worker import set_charge_spin
from al_lightning.plugins import import_object


class OracleError(RuntimeError):
    """An oracle could not label a structure."""


class Oracle(ABC):
    """Labels pool structures. ``structures`` are the unlabeled pool records of ``ids``.

    ``batch_only``: the oracle labels a round's whole selection in one call (the file hand-off)
    instead of one structure per call; :meth:`close` ends what it holds (a worker process) and
    runs when the round's labeling ends, also after an error."""

    name = "oracle"
    batch_only = False

    @abstractmethod
    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        """Labeled copies, one per id, in order."""

    def close(self) -> None:
        """Release what the oracle holds (nothing by default)."""


class StoredLabelOracle(Oracle):
    """Reveals labels already stored in the pool file (offline benchmarks)."""

    name = "stored"

    def __init__(self, pool: StructureFile) -> None:
        self.pool = pool

    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        out = []
        for i in ids:
            try:
                out.append(normalise(self.pool.raw(int(i)), f"{self.pool.path}: record {int(i)}",
                                     self.pool.energy_key, self.pool.forces_key,
                                     require_forces=has_forces(self.pool)))
            except DataError as exc:
                raise OracleError(f"stored-label oracle: {exc} (use a calculator oracle for unlabeled pools)") from None
        return out


class CalculatorOracle(Oracle):
    """Labels with any ASE calculator given by import path and keyword arguments.

    A structure's ``info["charge"]`` and ``info["multiplicity"]`` reach calculators whose
    parameters take them (tblite) and stay in the label's info (so in ``labels.db``).

    With ``timeout_s`` the calculator runs in a worker process killed at the limit (timeout.py);
    without, in this process. ``close()`` ends the worker."""

    name = "calculator"

    def __init__(self, calculator: str, kwargs: Optional[Dict[str, Any]] = None,
                 timeout_s: Optional[float] = None) -> None:
        from al_lightning.oracle.timeout import TimeoutWorker

        self.factory = import_object(calculator)
        self.calculator, self.kwargs, self.timeout_s = calculator, dict(kwargs or {}), timeout_s
        self._calc = None
        self.worker = TimeoutWorker(calculator, self.kwargs, timeout_s) if timeout_s else None

    def _get_calc(self):
        if self._calc is None:
            self._calc = self.factory(**self.kwargs)
        return self._calc

    def _compute(self, atoms: Atoms):
        if self.worker is not None:
            return self.worker.compute(atoms)
        work = atoms.copy()
        work.calc = self._get_calc()
        set_charge_spin(work.calc, work)
        return float(work.get_potential_energy()), np.array(work.get_forces(apply_constraint=False))

    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        from al_lightning.oracle.timeout import CalculatorFailed

        out = []
        for i, atoms in zip(ids, structures):
            try:
                energy, forces = self._compute(atoms)
            except Exception as exc:
                why = str(exc) if isinstance(exc, CalculatorFailed) else f"{type(exc).__name__}: {exc}"
                raise OracleError(f"{self.calculator} failed on pool id {int(i)}: {why}") from None
            work = atoms.copy()
            work.info[K.REF_ENERGY] = energy
            work.arrays[K.REF_FORCES] = forces
            out.append(normalise(work, f"{self.calculator} label of pool id {int(i)}"))
        return out

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
