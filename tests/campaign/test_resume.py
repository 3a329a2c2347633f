"""A campaign never loses a label: kill -9 in every phase, resume, same result, one call per id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = ["--trainer.max_epochs=2", "--campaign.strategy=pv_lcmd",
        "--campaign.strategy_kwargs={shortlist: 30, batch_size: 16, calibration: false}"]


def _run(out: Path, *extra, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AL_FAULT", None)
    if fault:
        env["AL_FAULT"] = fault
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", SMOKE, *FAST, f"--campaign.campaign_dir={out}", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _final(out: Path):
    state = json.loads((out / "campaign.json").read_text())
    ckpt_ids = [i for r in state["rounds"] for i in r["selected_ids"]]
    calls = [json.loads(x) for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    return state, ckpt_ids, [c["id"] for c in calls]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "c"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _final(out)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["fit:5", "pool:3", "label:3", "write:2"])
def test_kill_and_resume_gives_the_uninterrupted_result(tmp_path, reference, fault):
    out = tmp_path / "c"
    killed = _run(out, fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-1500:])
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state, ids, calls = _final(out)
    ref_state, ref_ids, _ = reference
    assert state["status"] == "complete"
    assert ids == ref_ids  # same selections, same final labeled set
    assert sorted(calls) == sorted(ids)  # exactly one oracle call per labeled id
    assert [r["n_labeled"] for r in state["rounds"]] == [r["n_labeled"] for r in ref_state["rounds"]]


@pytest.mark.slow
def test_finished_campaign_is_extended_and_changes_are_refused(tmp_path, reference, capsys, monkeypatch):
    out = tmp_path / "c"
    assert _run(out, "--campaign.rounds=1").returncode == 0
    before = (out / "campaign.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "-c", SMOKE, *FAST, f"--campaign.campaign_dir={out}", "--campaign.budget=5"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "different budget (8 vs 5)" in err and "--campaign.force true" in err
    assert (out / "campaign.json").read_bytes() == before
    assert _run(out, "--campaign.rounds=2").returncode == 0  # extend: one more acquisition
    state, ids, calls = _final(out)
    assert [r["n_labeled"] for r in state["rounds"]] == [16, 24, 32]
    assert ids == reference[1] and sorted(calls) == sorted(ids)


@pytest.mark.slow
def test_pool_pass_resumes_mid_pass_and_the_round_record_says_where(tmp_path, reference):
    out = tmp_path / "c"
    every_batch = "--campaign.pass_checkpoint_minutes=0"
    killed = _run(out, every_batch, fault="pool:2")
    assert killed.returncode == -9, killed.stderr[-1500:]
    assert (out / "round_000" / "pass_state.pt").exists()
    assert (out / "round_000" / "fit_state.pt").exists()  # the finished fit, kept before the pass began
    resumed = _run(out, every_batch)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state, ids, calls = _final(out)
    assert ids == reference[1] and sorted(calls) == sorted(ids)
    assert state["rounds"][0]["pass_resumed_from"] == 2  # batches 0 and 1 were not scored again
    assert all(r["pass_resumed_from"] is None for r in state["rounds"][1:-1])
    assert not list(out.glob("round_*/pass_state*.pt"))  # cleared once the selection was stored
    assert not list(out.glob("round_*/fit_state.pt"))  # cleared once each round's checkpoint was written
