"""Oracles: ``label(ids, structures) -> labeled Atoms`` (REF_energy / raw REF_forces).

The campaign calls an oracle on rank 0 only and broadcasts its results; every label is
written to disk before it is used (see :mod:`al_lightning.campaign`).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from ase import Atoms

from al_lightning import keys as K
from al_lightning.data.io import DataError, StructureFile, normalise
from al_lightning.data.readers import has_forces


class OracleError(RuntimeError):
    """An oracle could not label a structure."""


class Oracle(ABC):
    """Labels pool structures. ``structures`` are the unlabeled pool records of ``ids``."""

    name = "oracle"

    @abstractmethod
    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        """Labeled copies, one per id, in order."""


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


def import_object(path: str) -> Any:
    """``"package.module.Name"`` → the object (clear error when it does not exist)."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"oracle {path!r}: expected an import path like 'ase.calculators.emt.EMT'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"oracle {path!r}: cannot import ({exc})") from None


class CalculatorOracle(Oracle):
    """Labels with any ASE calculator given by import path and keyword arguments."""

    name = "calculator"

    def __init__(self, calculator: str, kwargs: Optional[Dict[str, Any]] = None,
                 timeout_s: Optional[float] = None) -> None:
        self.factory = import_object(calculator)
        self.calculator, self.kwargs, self.timeout_s = calculator, dict(kwargs or {}), timeout_s
        self._calc = None

    def _get_calc(self):
        if self._calc is None:
            self._calc = self.factory(**self.kwargs)
        return self._calc

    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        out = []
        for i, atoms in zip(ids, structures):
            work = atoms.copy()
            work.calc = self._get_calc()
            try:
                with _time_limit(self.timeout_s):
                    energy = float(work.get_potential_energy())
                    forces = np.array(work.get_forces(apply_constraint=False))
            except Exception as exc:
                raise OracleError(f"{self.calculator} failed on pool id {int(i)}: {type(exc).__name__}: {exc}") from None
            work.calc = None
            work.info[K.REF_ENERGY] = energy
            work.arrays[K.REF_FORCES] = forces
            out.append(normalise(work, f"{self.calculator} label of pool id {int(i)}"))
        return out


def make_oracle(spec: str, kwargs: Optional[Dict[str, Any]], datamodule, timeout_s: Optional[float] = None) -> Oracle:
    """``"stored"`` → :class:`StoredLabelOracle`; an import path → :class:`CalculatorOracle`."""
    if spec == "stored":
        return StoredLabelOracle(datamodule.structure_file("pool"))
    return CalculatorOracle(spec, kwargs, timeout_s=timeout_s)


@contextlib.contextmanager
def _time_limit(seconds: Optional[float]):
    """Raise TimeoutError after ``seconds`` (SIGALRM; main thread of a Unix process only)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"no label within {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
