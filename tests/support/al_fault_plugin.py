"""Test plugin for crash-resume tests, selected by ``AL_FAULT_PLUGIN=al_fault_plugin`` (tests/conftest.py
sets it and puts this folder on ``PYTHONPATH``, so subprocess campaigns load it too).

* :func:`hit` — the injector behind the package's one-line hook ``al_lightning.faults.hit(phase)``:
  ``AL_FAULT=<phase>:<n>[:<SIGNAL>][,…]`` makes the process send itself SIGKILL (or the named
  signal, e.g. ``fit:3:TERM``) at the n-th time it reaches ``phase`` (counted per process):
  ``fit`` (a training batch ended), ``test`` (a test batch ended), ``pool_batch`` (a pool batch's
  features are ready, not yet scored), ``pool`` (a pool feature batch was scored), ``label`` (a label was persisted), ``db`` (a row of labels.db was written, its
  transaction not yet committed), ``write`` (a round output file was written). Unset: no effect.
  The signal name ``OOM`` raises ``torch.cuda.OutOfMemoryError`` instead (the pool pass's
  batch-splitting drill on a machine without a GPU).
* :class:`FlakyEMT` — an oracle-failure drill (``campaign.oracle: al_fault_plugin.FlakyEMT``).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Dict

_counts: Dict[str, int] = {}


def hit(phase: str) -> None:
    """Count one arrival at ``phase``; signal this process when AL_FAULT says so."""
    spec = os.environ.get("AL_FAULT")
    if not spec:
        return
    _counts[phase] = _counts.get(phase, 0) + 1
    for item in spec.split(","):
        name, _, rest = item.strip().partition(":")
        n, _, sig = rest.partition(":")
        if name == phase and n.isdigit() and _counts[phase] == int(n):
            if sig == "OOM":
                import torch

                raise torch.cuda.OutOfMemoryError(f"simulated CUDA out of memory at {phase} {n}")
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), getattr(signal, f"SIG{sig}") if sig else signal.SIGKILL)


class FlakyEMT:
    """ASE's EMT that fails on a deterministic fraction of structures (oracle-failure drills).

    A structure fails when crc32(positions) mod 1000 < 1000·``fail_fraction``: half of those
    raise ``RuntimeError``, the other half return a NaN energy.
    """

    def __new__(cls, fail_fraction: float = 0.1):
        import zlib

        import numpy as np
        from ase.calculators.emt import EMT

        class _Flaky(EMT):
            def calculate(self, atoms=None, properties=("energy",), system_changes=()):
                key = zlib.crc32(np.ascontiguousarray(atoms.positions).tobytes()) % 1000
                if key < 1000 * fail_fraction and key % 2 == 0:
                    raise RuntimeError(f"simulated SCF failure (structure key {key})")
                super().calculate(atoms, properties, system_changes)
                if key < 1000 * fail_fraction:
                    self.results["energy"] = float("nan")

        return _Flaky()
