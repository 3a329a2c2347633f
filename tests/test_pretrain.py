"""``al-lightning pretrain``: smoke run, card, resume, reproducing the card's epoch-1 val loss."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "pretrain_smoke.yaml")


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["pretrain", "-c", SMOKE, f"--pretrain.work_dir={out}", f"--pretrain.output={out}/m.model", *extra])
    return code, out


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    code, out = _run(tmp_path_factory.mktemp("pt"), "full")
    assert code == 0
    return out, json.loads((out / "m.json").read_text())


def test_card_describes_the_model_file(two_epochs):
    out, card = two_epochs
    assert card["sha256"] == hashlib.sha256((out / "m.model").read_bytes()).hexdigest()
    assert card["epochs_trained"] == 2 and [r["epoch"] for r in card["history"]] == [1, 2]
    assert card["data"]["spec_hash"] and card["seed"] == 0 and card["wall_seconds"] > 0
    assert card["command"].startswith("al-lightning pretrain -c")
    best = min(card["history"], key=lambda r: r["val/loss"])
    assert card["best_epoch"] == best["epoch"] and card["validation"]["val/loss"] == best["val/loss"]
    model = torch.load(out / "m.model", weights_only=False)
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert type(model).__name__ == "ScaleShiftMACE"


def test_exported_model_holds_the_best_epoch(two_epochs):
    """The .model file gives the best epoch's val forces MAE (on the foundation val split)."""
    from al_lightning.model.module import MACEModule
    from al_lightning.pretrain import FoundationDataModule
    from al_lightning.data.foundation import FoundationSpec
    import lightning.pytorch as pl

    out, card = two_epochs
    spec = FoundationSpec(seed=0, sizes={"train": 60, "val": 20})  # as in configs/pretrain_smoke.yaml
    assert spec.key() == card["data"]["spec_hash"]
    dm = FoundationDataModule(spec)
    module = MACEModule(foundation=str(out / "m.model"), dtype="float64")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, inference_mode=False,
                         enable_model_summary=False)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert metrics["val/forces_mae"] == pytest.approx(card["validation"]["val/forces_mae"], rel=1e-6)


def test_rerun_of_epoch_one_matches_the_card_and_a_wrong_card_fails(two_epochs, tmp_path):
    out, card = two_epochs
    code, _ = _run(tmp_path, "one", "--trainer.max_epochs=1", f"--pretrain.check_card={out / 'm.json'}")
    assert code == 0
    bad = json.loads((out / "m.json").read_text())
    bad["history"][0]["val/loss"] *= 1.001
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    code, _ = _run(tmp_path, "two", "--trainer.max_epochs=1", f"--pretrain.check_card={tmp_path / 'bad.json'}")
    assert code == 1


def test_resume_continues_to_the_uninterrupted_result(two_epochs, tmp_path):
    _, card = two_epochs
    code, out = _run(tmp_path, "resumed", "--trainer.max_epochs=1")
    assert code == 0 and (out / "checkpoints" / "last.ckpt").exists()
    code, out = _run(tmp_path, "resumed")  # same command, 2 epochs: continues from last.ckpt
    assert code == 0
    resumed = json.loads((out / "m.json").read_text())
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert [r["val/loss"] for r in resumed["history"]] == pytest.approx([r["val/loss"] for r in card["history"]],
                                                                         rel=1e-9)


@pytest.mark.slow
def test_sigterm_during_pretraining_exits_143_and_the_rerun_resumes(tmp_path):
    """A real SIGTERM (sent by the test fault plugin after the 3rd training batch) ends pretraining
    with status 143 and a resume message, no model; the same command then finishes from last.ckpt."""
    import os
    import subprocess
    import sys

    out = tmp_path / "p"
    cmd = [sys.executable, "-m", "al_lightning.cli", "pretrain", "-c", SMOKE, f"--pretrain.work_dir={out}",
           f"--pretrain.output={out}/m.model", "--trainer.max_epochs=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    stopped = subprocess.run(cmd, env={**env, "AL_FAULT": "fit:12:TERM"}, capture_output=True, text=True, timeout=600)
    assert stopped.returncode == 143, stopped.stderr[-1500:]
    assert "stopped by SIGTERM" in stopped.stderr and "rerun the same command to resume" in stopped.stderr
    assert not (out / "m.model").exists() and (out / "checkpoints" / "last.ckpt").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert json.loads((out / "m.json").read_text())["epochs_trained"] == 3


def test_default_output_is_no_tracked_file():
    """Neither the built-in default nor a shipped pretrain config writes over models/ (tracked files)."""
    import yaml

    from al_lightning.pretrain import PretrainConfig

    outputs = [PretrainConfig().output] + [yaml.safe_load(p.read_text())["pretrain"]["output"]
                                           for p in sorted((ROOT / "configs").glob("pretrain_*.yaml"))]
    assert all(not str(o).startswith("models/") for o in outputs), outputs
