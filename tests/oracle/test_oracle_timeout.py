"""The hard oracle timeout (issue 14 item 5): a calculator stuck in C code runs in a worker
process that is killed at the limit; the failure is recorded and labeling goes on."""

import time
from pathlib import Path

import pytest
from ase.build import bulk

from al_lightning.campaign.labeling import LabelStore, label_round
from al_lightning.oracle import CalculatorOracle


@pytest.fixture(autouse=True)
def _calculators_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the worker sees this process's sys.path


def test_calculator_stuck_in_c_code_is_recorded_as_failed(tmp_path):
    """SIGALRM cannot stop ``re``'s backtracking loop; the killed worker can. The next structure is
    labeled by a fresh worker."""
    store = LabelStore(tmp_path)
    oracle = CalculatorOracle("stuck_calculators.BacktrackingEMT", {"stuck_symbol": "Cu"}, timeout_s=2)
    structures = [bulk("Cu", cubic=True), bulk("Al", cubic=True)]
    t0 = time.perf_counter()
    try:
        done, labels, failed = label_round(store, 0, [5, 9], structures, oracle, "stuck", lambda i, a: None)
    finally:
        oracle.close()
    assert done == [9] and labels[0].info["REF_energy"] == pytest.approx(-0.00600819, abs=1e-6)
    assert list(failed) == [5] and "TimeoutError: no label within 2 s (worker process killed)" in failed[5]
    assert store.stored(0)[1] == failed  # stored: a row of labels.db
    assert time.perf_counter() - t0 < 5.0
    assert oracle.worker.proc is None  # closed: no process left behind


def test_system_exit_in_the_worker_is_raised_here():
    oracle = CalculatorOracle("stuck_calculators.ExitingEMT", timeout_s=5)
    with pytest.raises(SystemExit) as info:
        oracle.label([1], [bulk("Cu", cubic=True)])
    assert info.value.code == 0 and oracle.worker.proc is None


def test_without_timeout_the_calculator_runs_in_process():
    oracle = CalculatorOracle("ase.calculators.emt.EMT")
    out = oracle.label([1], [bulk("Al", cubic=True)])
    assert oracle.worker is None and oracle._calc is not None and out[0].info["REF_energy"] == pytest.approx(
        -0.00600819, abs=1e-6)
