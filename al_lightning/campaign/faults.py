"""Oracle-failure drills: :class:`FlakyEMT` (``campaign.oracle: al_lightning.campaign.faults.FlakyEMT``).

The fault-injection hook itself (``AL_FAULT``) lives in :mod:`al_lightning.faults`, below every
subpackage, so acquisition and the label store can call it without importing the campaign.
"""

from __future__ import annotations

from al_lightning.faults import PHASES, FaultCallback, hit

__all__ = ["PHASES", "FaultCallback", "FlakyEMT", "hit"]


class FlakyEMT:
    """ASE's EMT that fails on a deterministic fraction of structures (oracle-failure drills).

    A structure fails when crc32(positions) mod 1000 < 1000·``fail_fraction``: half of those
    raise ``RuntimeError``, the other half return a NaN energy. Use it as
    ``campaign.oracle: al_lightning.campaign.faults.FlakyEMT``.
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
