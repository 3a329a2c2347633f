"""Exit statuses that tell the truth (issue 14 item 4): a stop signal or a SystemExit anywhere in a
campaign ends it with a non-zero status after the last safe write; the same command resumes to
the uninterrupted selections, with one oracle call per label."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import al_fault_plugin
from al_lightning.campaign.labeling import LabelStore
from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--campaign.rounds=1", "--campaign.export_models=false",
        "--campaign.strategy=pv_topb", "--campaign.strategy_kwargs={batch_size: 16, calibration: false}"]


def _args(d: Path, *extra: str):
    return ["fit", "-c", SMOKE, *FAST, f"--campaign.campaign_dir={d}", *extra]


def _selections(d: Path):
    state = json.loads((d / "campaign.json").read_text())
    calls = [json.loads(x)["id"] for x in (d / "oracle_calls.jsonl").read_text().splitlines()]
    return state["status"], [r["selected_ids"] for r in state["rounds"]], [r["n_labeled"] for r in state["rounds"]], calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupts") / "ref"
    os.environ.pop("AL_FAULT", None)
    assert main(_args(d)) == 0
    return _selections(d)


def _stopped_by(fault: str, d: Path, monkeypatch, capsys, *extra) -> int:
    monkeypatch.setenv("AL_FAULT", fault)
    al_fault_plugin._counts.clear()
    try:
        code = main(_args(d, *extra))
    finally:
        monkeypatch.delenv("AL_FAULT")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the campaign's handlers are gone
    return code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("fault, signum", [("fit:2:TERM", signal.SIGTERM), ("test:1:INT", signal.SIGINT),
                                           ("pool:2:USR1", signal.SIGUSR1), ("label:3:TERM", signal.SIGTERM),
                                           ("write:1:TERM", signal.SIGTERM)])
def test_signal_then_rerun_gives_the_uninterrupted_result(fault, signum, reference, tmp_path, monkeypatch, capsys):
    d = tmp_path / "c"
    monkeypatch.chdir(tmp_path)
    code, last = _stopped_by(fault, d, monkeypatch, capsys)
    name = signal.Signals(signum).name
    assert code == 128 + signum and last == (f"al-lightning: stopped by {name} after the last safe write (exit status "
                                             f"{128 + signum}); rerun the same command to resume")
    if fault.startswith("write"):  # a signal during the round's outputs waits for campaign.json
        assert len(json.loads((d / "campaign.json").read_text())["rounds"]) == 1
    assert main(_args(d)) == 0
    status, selected, n_labeled, calls = _selections(d)
    assert (status, selected, n_labeled) == reference[:3]
    assert sorted(calls) == sorted(i for ids in selected for i in ids)  # one oracle call per label


@pytest.mark.parametrize("timeout", [None, 30])
def test_oracle_system_exit_0_is_not_a_success(timeout, tmp_path, monkeypatch, capsys):
    """An oracle calling sys.exit(0) (in this process, or in the timeout worker) ends with status 2;
    nothing is recorded as a failure, so the rerun labels those structures again."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "oracle"))
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "c"
    extra = ["--campaign.oracle=stuck_calculators.ExitingEMT"] + ([f"--campaign.oracle_timeout={timeout}"] if timeout
                                                                   else [])
    assert main(_args(d, *extra)) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "al-lightning: stopped: SystemExit(0) raised inside the campaign (an oracle or a callback; exit status 2)")
    assert (d / "labels" / "round_000" / "selected.json").exists()
    assert not LabelStore(d).stored(0)[1] and not (d / "campaign.json").exists()


def test_sigterm_exit_status_of_the_process(tmp_path):
    """The console entry point's process ends with 128 + 15 (Lightning alone would exit 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "AL_FAULT": "fit:1:TERM"}
    proc = subprocess.run([sys.executable, "-m", "al_lightning.cli", *_args(tmp_path / "c")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert (tmp_path / "c" / "fingerprint.json").exists() and not (tmp_path / "c" / "campaign.json").exists()


def test_no_lightning_auto_requeue_under_slurm(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from al_lightning.campaign.runner import default_trainer_factory

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "campaign")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"stale")  # never looked for: the default root is the campaign dir
    logger = TensorBoardLogger(save_dir=str(tmp_path / "c"), name="tb", version="round_000")
    trainer = default_trainer_factory(accelerator="cpu", devices=1, enable_progress_bar=False)(0, logger, [])
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert Path(trainer.default_root_dir) == tmp_path / "c" and trainer._checkpoint_connector._hpc_resume_path is None
