"""EMT labeling and Langevin MD frames shared by the embedded datasets (catalysis, foundation)."""

from __future__ import annotations

from typing import List

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT

from al_lightning import keys as K


def label_emt(atoms: Atoms, source: str) -> Atoms:
    """Copy of ``atoms`` with EMT energy and *raw* forces (constraints not applied) stored
    under mace's ``REF_energy`` / ``REF_forces`` keys and ``info["source"] = source``."""
    frame = atoms.copy()
    frame.calc = EMT()
    energy = frame.get_potential_energy()
    forces = frame.get_forces(apply_constraint=False)
    frame.calc = None
    frame.info[K.REF_ENERGY] = float(energy)
    frame.arrays[K.REF_FORCES] = np.array(forces)
    frame.info[K.SOURCE] = source
    return frame


def langevin_frames(start: Atoms, n: int, temperature_K: float, steps_between: int,
                    rng: np.random.Generator, friction: float = 0.02) -> List[Atoms]:
    """``n`` labeled frames of an EMT Langevin run from ``start`` (1 fs steps, one frame every
    ``steps_between`` steps); velocities and noise seeded from ``rng``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = start.copy()
    work.calc = EMT()
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(work, 1.0 * units.fs, temperature_K=temperature_K, friction=friction, fixcm=False,
                   rng=np.random.RandomState(int(rng.integers(2**31))))
    frames = []
    for _ in range(n):
        dyn.run(steps_between)
        frame = start.copy()
        frame.set_positions(work.get_positions(), apply_constraint=False)
        frames.append(label_emt(frame, "md"))
        frames[-1].info["md_temperature_K"] = round(float(temperature_K), 1)
    return frames
