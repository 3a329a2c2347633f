"""examples/make_own_data.py teaches what a user's own data should look like: no outlier frame in
the labeled or evaluation splits (one 46 eV/Å frame in val made validation MAE twice test MAE)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]


def test_own_data_example_has_no_outliers_in_val_and_test(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "make_own_data.py"), str(tmp_path), "--pool", "30",
                           "--train", "10", "--val", "20", "--test", "20", "--seed", "3"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    sys.path.insert(0, str(ROOT / "examples"))
    from make_own_data import MAX_LABELED_FORCE

    for split in ("train", "val", "test"):
        frames = read(tmp_path / f"{split}.extxyz", index=":")
        assert max(np.linalg.norm(a.arrays["REF_forces"], axis=1).max() for a in frames) <= MAX_LABELED_FORCE
