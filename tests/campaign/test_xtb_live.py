"""A live GFN2-xTB oracle (tblite through the timeout worker): kill -9 while labeling, rerun,
every id labeled exactly once with real xTB labels; SCF non-convergence is a recorded failure
(never a crash)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from al_lightning import keys as K

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
XTB = ("{seed: 5, sizes: {pool: 40, initial: 10, val: 6, test_id: 6}, traj_frames_mean: 6, traj_frames_max: 12, "
       "path_images: 4, neb_steps: 5}")


def _args(out: Path, oracle_args: str = "{method: GFN2-xTB, verbosity: 0}"):
    return ["fit", "-c", SMOKE, "--data.emt=null", f"--data.xtb={XTB}", "--trainer.max_epochs=1",
            "--campaign.rounds=2", "--campaign.budget=4", "--campaign.strategy=random",
            f"--campaign.oracle={{class_path: tblite.ase.TBLite, init_args: {oracle_args}}}",
            "--campaign.oracle_timeout=60", "--campaign.export_models=false", f"--campaign.campaign_dir={out}"]


def _run(out: Path, fault=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AL_FAULT", None)
    if fault:
        env["AL_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "al_lightning.cli", *_args(out, **kw)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_during_xtb_labeling_then_rerun_labels_every_id_once(tmp_path):
    from ase.db import connect

    from al_lightning.data.molecules import xtb_calculator
    from al_lightning.data.simulate import label_frame

    out = tmp_path / "c"
    killed = _run(out, fault="label:3")
    assert killed.returncode == -9, killed.stderr[-1500:]
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = json.loads((out / "campaign.json").read_text())
    ids = [i for r in state["rounds"] for i in r["selected_ids"]]
    calls = [json.loads(x)["id"] for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    assert len(ids) == 8 and sorted(calls) == sorted(ids)  # each id labeled exactly once across the kill
    row = next(iter(connect(out / "labels.db", use_lock_file=False).select(status="labeled")))
    atoms = row.toatoms()
    atoms.calc = None
    atoms.info.update((row.get("data") or {}).get("info", {}))
    direct = label_frame(atoms, "check", xtb_calculator)  # the stored label is a real xTB label
    assert row.energy == pytest.approx(direct.info[K.REF_ENERGY], abs=1e-6)
    np.testing.assert_allclose(row.forces, direct.arrays[K.REF_FORCES], atol=1e-6)


@pytest.mark.slow
def test_scf_non_convergence_is_a_recorded_failure(tmp_path):
    out = tmp_path / "c"
    proc = _run(out, oracle_args="{method: GFN2-xTB, verbosity: 0, max_iterations: 1}")
    # every label failed: more than campaign.max_failed_fraction, so the run stops in one line (status 2)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "SCF not converged" in proc.stderr and "failures are stored there and never retried" in proc.stderr
    from ase.db import connect

    rows = list(connect(out / "labels.db", use_lock_file=False).select())
    assert rows and all(r.status == "failed" for r in rows)
    assert all("SCF" in r.error or "converge" in r.error.lower() for r in rows), rows[0].error
