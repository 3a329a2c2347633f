"""Oracle failures, the file hand-off oracle and the sanity filter inside a campaign."""

import json
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read, write

from al_lightning.campaign.labeling import LabelStore
from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--campaign.export_models=false"]


def _emt_labeled(frames):
    for f in frames:
        f.calc = EMT()
        f.info["REF_energy"] = f.get_potential_energy()
        f.arrays["REF_forces"] = f.get_forces(apply_constraint=False)
        f.calc = None
    return frames


@pytest.mark.slow
def test_failing_oracle_campaign_completes_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", SMOKE, *FAST, "--campaign.budget=20", "--campaign.oracle=al_fault_plugin.FlakyEMT",
            "--campaign.oracle_kwargs={fail_fraction: 0.1}"]
    assert main(args) == 0
    d = tmp_path / "logs" / "smoke"
    state = json.loads((d / "campaign.json").read_text())
    failed = state["failed"]
    assert failed, "a 10% flaky oracle over 40 labels should fail at least once"
    assert {"simulated SCF failure" in f["error"] or "is nan" in f["error"] for f in failed} <= {True}
    ok = sum(len(r["selected_ids"]) for r in state["rounds"]) - len(failed)
    assert state["rounds"][-1]["n_labeled"] == 16 + ok
    failed_ids = {f["id"] for f in failed}
    r1 = set(state["rounds"][1]["selected_ids"])
    assert not (failed_ids & r1) or all(f["round"] == 1 for f in failed if f["id"] in r1)  # never picked again
    report = (d / "report.md").read_text()
    assert f"Oracle failures: {len(failed)}" in report


def test_all_failing_oracle_stops_with_status_2_after_the_first_round(tmp_path, monkeypatch, capsys):
    """More than campaign.max_failed_fraction of a round's labels failed: the failures are stored,
    status 2; a rerun stops again before fitting without calling the oracle; a rerun accepting the
    failures (max_failed_fraction 1) completes, retrying none of them."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "logs" / "smoke"
    args = ["fit", "-c", SMOKE, *FAST, "--campaign.rounds=1", "--campaign.oracle=al_fault_plugin.FlakyEMT",
            "--campaign.oracle_kwargs={fail_fraction: 1.0}"]
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    db = d / "labels.db"
    assert last.startswith(f"al-lightning: error: {db}: 8 of 8 labels of round 0 failed (more than "
                           "campaign.max_failed_fraction=0.5; first: al_fault_plugin.FlakyEMT failed")
    assert f"fix the oracle and delete their rows (ase db {db} round=0,status=failed --delete --yes)" in last
    assert len(LabelStore(d).stored(0)[1]) == 8 and not (d / "campaign.json").exists()
    calls = (d / "oracle_calls.jsonl").read_text()
    kept = (d / "round_000" / "fit_state.pt").stat().st_mtime_ns  # the first run's fit, kept
    assert main(args) == 2 and capsys.readouterr().err.strip().splitlines()[-1] == last
    assert (d / "oracle_calls.jsonl").read_text() == calls  # no oracle call
    assert [p.name for p in (d / "round_000").iterdir()] == ["fit_state.pt"]  # no fit, nothing written
    assert (d / "round_000" / "fit_state.pt").stat().st_mtime_ns == kept
    assert main([*args, "--campaign.max_failed_fraction=1"]) == 0
    state = json.loads((d / "campaign.json").read_text())
    assert [r["n_labeled"] for r in state["rounds"]] == [16, 16] and len(state["failed"]) == 8
    assert (d / "oracle_calls.jsonl").read_text() == calls


@pytest.mark.slow
def test_file_handoff_stops_cleanly_then_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", SMOKE, *FAST, "--campaign.rounds=1", "--campaign.oracle=file"]
    assert main(args) == 0
    err = capsys.readouterr().err
    request = tmp_path / "logs" / "smoke" / "handoff" / "round_000.request.extxyz"
    labels = request.with_name("round_000.labels.extxyz")
    assert f"write them, same order, to {labels}" in err and request.exists()
    frames = read(request, ":")
    assert len(frames) == 8
    kept = tmp_path / "logs" / "smoke" / "round_000" / "fit_state.pt"
    assert kept.exists()  # the round's fit, kept for the rerun
    bad = [f.copy() for f in frames]
    bad[0].positions[0, 0] += 0.5
    write(labels, _emt_labeled(bad))
    assert main([*args, "--dry_run"]) == 2  # the dry run checks a present labels file, before any refit
    assert "record 0: not the requested structure" in capsys.readouterr().err
    from al_lightning.model.module import MACEModule

    steps = []
    real_step = MACEModule.training_step
    monkeypatch.setattr(MACEModule, "training_step", lambda self, *a, **k: steps.append(self) or real_step(self, *a, **k))
    assert main(args) == 2
    assert "record 0: not the requested structure" in capsys.readouterr().err
    assert steps == []  # the rerun loaded the kept fit: no training step before the labels were read
    write(labels, _emt_labeled([f.copy() for f in frames]))
    assert main([*args, "--dry_run"]) == 0
    assert main(args) == 0
    n_round0 = len(steps)
    state = json.loads((tmp_path / "logs" / "smoke" / "campaign.json").read_text())
    assert state["status"] == "complete" and [r["n_labeled"] for r in state["rounds"]] == [16, 24]
    assert sorted(f.info["pool_id"] for f in frames) == sorted(state["rounds"][0]["selected_ids"])
    assert n_round0 > 0 and state["rounds"][0]["epochs"] > 0  # round 1 trained; round 0's record is the kept fit's
    assert not kept.exists()


def test_sanity_filter():
    from ase import Atoms

    from al_lightning.campaign.labeling import sanity_problem

    close = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.3]], cell=[5, 5, 5], pbc=True)
    assert "0.300 Å apart" in sanity_problem(close, 0.5, None, None)
    far = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.9]], cell=[5, 5, 5], pbc=True)
    assert sanity_problem(far, 0.5, None, None) is None
    assert "predicted max |F| 12.00" in sanity_problem(far, 0.5, 10.0, 12.0)
