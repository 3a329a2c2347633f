"""Oracles: stored labels and an ASE calculator agree on the EMT pool; clear errors."""

import numpy as np
import pytest
from ase.io import write

from al_lightning import keys as K
from al_lightning.data.io import StructureFile
from al_lightning.oracle import CalculatorOracle, OracleError, StoredLabelOracle


def test_calculator_oracle_reproduces_stored_emt_labels(tiny_paths):
    pool = StructureFile(tiny_paths["pool"], require_labels=False)
    ids = [0, 17, 42]
    unlabeled = []
    for i in ids:
        a = pool.raw(i)
        a.info.pop(K.REF_ENERGY)
        a.arrays.pop(K.REF_FORCES)
        unlabeled.append(a)
    stored = StoredLabelOracle(pool).label(ids, unlabeled)
    computed = CalculatorOracle("ase.calculators.emt.EMT").label(ids, unlabeled)
    for s, c in zip(stored, computed):
        assert c.info[K.REF_ENERGY] == pytest.approx(s.info[K.REF_ENERGY], abs=1e-6)
        # raw forces, fixed atoms included (extxyz keeps 8 decimals)
        np.testing.assert_allclose(c.arrays[K.REF_FORCES], s.arrays[K.REF_FORCES], atol=1e-6)
    assert all(K.REF_ENERGY not in a.info for a in unlabeled)  # inputs untouched


def test_calculator_oracle_errors(tiny_paths):
    with pytest.raises(ValueError, match="cannot import"):
        CalculatorOracle("ase.calculators.nothing.Nope")
    with pytest.raises(ValueError, match="expected an import path"):
        CalculatorOracle("EMT")
    pool = StructureFile(tiny_paths["pool"], require_labels=False)
    atoms = pool.raw(0)
    atoms.numbers[0] = 92  # uranium: EMT has no parameters
    with pytest.raises(OracleError, match="EMT failed on pool id 5"):
        CalculatorOracle("ase.calculators.emt.EMT").label([5], [atoms])


def test_stored_oracle_needs_labels(tmp_path, tiny_paths):
    pool = StructureFile(tiny_paths["pool"], require_labels=False)
    a = pool.raw(0)
    del a.info[K.REF_ENERGY]
    write(tmp_path / "p.extxyz", [a])
    with pytest.raises(OracleError, match="record 0: no energy label.*calculator oracle"):
        StoredLabelOracle(StructureFile(tmp_path / "p.extxyz", require_labels=False)).label([0], [a])


def test_calculator_timeout(tiny_paths, monkeypatch):
    import time
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the worker process imports the calculator
    pool = StructureFile(tiny_paths["pool"], require_labels=False)
    oracle = CalculatorOracle("stuck_calculators.SleepyEMT", timeout_s=0.2)
    t0 = time.perf_counter()
    with pytest.raises(OracleError, match="pool id 3: TimeoutError: no label within 0.2 s"):
        oracle.label([3], [pool.raw(3)])
    assert time.perf_counter() - t0 < 2.0


def test_handoff_accepts_labels_written_the_standard_ase_way(tmp_path):
    """A labels file written by ase.io.write after a calculation (energy/forces as calculator
    results, no REF_ keys) is accepted, with the raw forces."""
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    from al_lightning.oracle import FileHandoffOracle, HandoffPending

    structures = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Au", "fcc", a=4.1, cubic=True)]
    for a in structures:
        a.rattle(0.05, seed=1)
    oracle = FileHandoffOracle(tmp_path, 0)
    with pytest.raises(HandoffPending):
        oracle.label([3, 8], [a.copy() for a in structures])
    labeled = []
    for a in structures:
        a = a.copy()
        a.calc = EMT()
        a.get_potential_energy()
        labeled.append(a)
    write(oracle.labels, labeled, format="extxyz")
    out = oracle.label([3, 8], [a.copy() for a in structures])
    for got, ref in zip(out, labeled):
        assert got.info["REF_energy"] == pytest.approx(ref.get_potential_energy())
        np.testing.assert_allclose(got.arrays["REF_forces"], ref.get_forces(apply_constraint=False), atol=1e-8)
