"""Labeling and Langevin MD frames shared by the embedded datasets (EMT catalysis, EMT
foundation, xTB molecules): one calculator factory per dataset, the same code path for all."""

from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT

from al_lightning import keys as K

CalculatorFactory = Callable[[Atoms], Calculator]  # atoms -> a fresh calculator for them (picklable)


def emt_calculator(atoms: Atoms) -> Calculator:
    """ASE's EMT (the calculator of the EMT datasets)."""
    return EMT()


def label_frame(atoms: Atoms, source: str, calculator: CalculatorFactory = emt_calculator) -> Atoms:
    """Copy of ``atoms`` with the calculator's energy and *raw* forces (constraints not applied)
    under mace's ``REF_energy`` / ``REF_forces`` keys and ``info["source"] = source``.
    Raises the calculator's own error (e.g. ``CalculationFailed`` for an SCF failure)."""
    frame = atoms.copy()
    frame.calc = calculator(frame)
    energy = frame.get_potential_energy()
    forces = frame.get_forces(apply_constraint=False)
    frame.calc = None
    frame.info[K.REF_ENERGY] = float(energy)
    frame.arrays[K.REF_FORCES] = np.array(forces)
    frame.info[K.SOURCE] = source
    return frame


def bfgs_path(atoms: Atoms, calculator: CalculatorFactory, steps: int, fmax: float, maxstep: float,
              constraint=None) -> Tuple[List[np.ndarray], Atoms]:
    """(positions at the start and after every BFGS step, the relaxed working copy) of at most
    ``steps`` steps on a copy of ``atoms`` (with ``constraint`` added when given)."""
    from ase.optimize import BFGS

    work = atoms.copy()
    if constraint is not None:
        work.set_constraint(constraint)
    work.calc = calculator(work)
    snapshots = [work.get_positions()]
    opt = BFGS(work, logfile=None, maxstep=maxstep)
    opt.attach(lambda: snapshots.append(work.get_positions()))
    opt.run(fmax=fmax, steps=steps)
    return snapshots, work


def label_emt(atoms: Atoms, source: str) -> Atoms:
    """:func:`label_frame` with EMT."""
    return label_frame(atoms, source, emt_calculator)


def langevin_frames(start: Atoms, n: int, temperature_K: float, steps_between: int,
                    rng: np.random.Generator, friction: float = 0.02,
                    calculator: CalculatorFactory = emt_calculator, timestep_fs: float = 1.0) -> List[Atoms]:
    """``n`` labeled frames of a Langevin run from ``start`` (``timestep_fs`` steps, one frame
    every ``steps_between`` steps); velocities and noise seeded from ``rng``. Each frame is
    labeled by a fresh calculator (not the MD's cached results: bitwise the same files as before)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = start.copy()
    work.calc = calculator(work)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(work, timestep_fs * units.fs, temperature_K=temperature_K, friction=friction, fixcm=False,
                   rng=np.random.RandomState(int(rng.integers(2**31))))
    frames = []
    for _ in range(n):
        dyn.run(steps_between)
        frame = start.copy()
        frame.set_positions(work.get_positions(), apply_constraint=False)
        frames.append(label_frame(frame, "md", calculator))
        frames[-1].info["md_temperature_K"] = round(float(temperature_K), 1)
    return frames
