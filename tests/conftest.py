"""Shared fixtures: one BLAS thread, a repo-local dataset cache, the fault plugin, a tiny EMT dataset."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("AL_LIGHTNING_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "al_lightning"))
# the fault-injection plugin (AL_FAULT) and the oracle-failure drill live in tests/support; subprocess
# campaigns find them through PYTHONPATH
SUPPORT = str(Path(__file__).resolve().parent / "support")
sys.path.insert(0, SUPPORT)
os.environ["PYTHONPATH"] = os.pathsep.join([SUPPORT, *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ["AL_FAULT_PLUGIN"] = "al_fault_plugin"

import al_lightning  # noqa: E402,F401  (mace before e3nn)
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
TINY_SIZES = {"pool": 60, "initial": 12, "val": 8, "test_id": 8, "test_ood_ads": 8, "test_ood_cat": 8,
              "test_ood_both": 8}


@pytest.fixture(scope="session")
def tiny_spec():
    from al_lightning.data.synthetic import EMTCatalysisSpec

    return EMTCatalysisSpec(seed=3, sizes=dict(TINY_SIZES))


@pytest.fixture(scope="session")
def tiny_paths(tiny_spec):
    from al_lightning.data.synthetic import ensure_dataset

    return ensure_dataset(tiny_spec, workers=2)


@pytest.fixture(autouse=True)
def _default_dtype():
    """Tests may switch the default dtype (MACEModule does); restore it after each."""
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)
