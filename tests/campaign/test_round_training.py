"""Each round's model trained properly: early stopping, best (EMA) weights restored, and the same
weights behind the recorded test metrics, the exported model, the acquisition and a resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
MAX_EPOCHS = 15
# lr 0.05 makes val/loss turn up after a few epochs: early stopping (patience 2) ends each round
ES_EMA = [f"--trainer.max_epochs={MAX_EPOCHS}", "--model.lr=0.05", "--model.ema_decay=0.5",
          "--campaign.early_stopping_patience=2", "--campaign.strategy=pv_lcmd",
          "--campaign.strategy_kwargs={shortlist: 30, batch_size: 16, calibration: false}"]
TEST_SPLITS = ["test_id", "test_ood_ads", "test_ood_cat", "test_ood_both"]


def _run(out: Path, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AL_FAULT", None)
    if fault:
        env["AL_FAULT"] = fault
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", SMOKE, *ES_EMA, f"--campaign.campaign_dir={out}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _state(out: Path) -> dict:
    return json.loads((out / "campaign.json").read_text())


def _epoch_scalars(out: Path, r: int, tag: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb" / f"round_{r:03d}"))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]  # one per epoch (TensorBoard stores float32)


def _validate_file(model_path: Path, dm) -> dict:
    """val/loss and val metrics of an exported model, in this process (no EMA, no training)."""
    import lightning.pytorch as pl

    from al_lightning.model.module import MACEModule

    module = MACEModule(foundation=str(model_path), dtype="float64")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False, use_distributed_sampler=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("es_ema") / "c"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_early_stopping_keeps_the_best_validated_ema_weights(reference, campaign_datamodule):
    state = _state(reference)
    assert state["status"] == "complete"
    for rec in state["rounds"]:
        r = rec["round"]
        losses, maes = _epoch_scalars(reference, r, "val/loss"), _epoch_scalars(reference, r, "val/forces_mae")
        best = int(np.argmin(losses))
        assert rec["epochs"] == len(losses) < MAX_EPOCHS  # stopped early, patience 2 after the best epoch
        assert rec["best_epoch"] == best == len(losses) - 3
        assert rec["metrics"]["val/forces_mae"] == pytest.approx(maes[best], rel=1e-6)
        again = _validate_file(reference / f"round_{r:03d}" / "model.model",
                               campaign_datamodule(reference, eval_batch_size=32))
        assert again["val/loss"] == pytest.approx(min(losses), rel=1e-6)  # the exported model is the best epoch's
        assert again["val/forces_mae"] == pytest.approx(rec["metrics"]["val/forces_mae"], rel=1e-9)


@pytest.mark.slow
def test_acquisition_used_the_exported_ema_weights(reference, campaign_datamodule):
    """Round 0's pv_lcmd selection, recomputed from round_000/model.model, is the recorded one."""
    from al_lightning.acquisition import AcquisitionContext, build_strategy, select
    from al_lightning.model.module import MACEModule

    state = _state(reference)
    dm = campaign_datamodule(reference, eval_batch_size=32)
    dm.prepare_data()
    dm.setup("fit")
    module = MACEModule(foundation=str(reference / "round_000" / "model.model"), dtype="float64")
    module.build(dm)
    strategy = build_strategy("pv_lcmd", {"shortlist": 30, "batch_size": 16, "calibration": False})
    ctx = AcquisitionContext(module, dm, round=0, seed=0, budget=8, candidates=dm.candidate_ids())
    assert [int(i) for i in select(strategy, ctx).ids] == state["rounds"][0]["selected_ids"]


@pytest.mark.slow
def test_resume_after_kill_reproduces_selections_metrics_and_models(tmp_path, reference, calculator_metrics):
    ref = _state(reference)
    out = tmp_path / "c"
    round0_batches = ref["rounds"][0]["epochs"] * 2  # 16 labels, batch_size 8
    killed = _run(out, fault=f"fit:{round0_batches + 3}")  # mid-fit of round 1
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-1500:])
    assert [r["round"] for r in _state(out)["rounds"]] == [0]
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = _state(out)
    assert [r["selected_ids"] for r in state["rounds"]] == [r["selected_ids"] for r in ref["rounds"]]
    assert [(r["epochs"], r["best_epoch"]) for r in state["rounds"]] == [(r["epochs"], r["best_epoch"])
                                                                       for r in ref["rounds"]]
    for rec, ref_rec in zip(state["rounds"], ref["rounds"]):
        assert rec["metrics"] == pytest.approx(ref_rec["metrics"], rel=1e-12)
    ckpt = torch.load(out / "round_001" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"net", "datamodule", "round"}
    # models exported after the resume reproduce the recorded test metrics in MACECalculator
    for r in (1, 2):
        calc = calculator_metrics(out / f"round_{r:03d}" / "model.model", out, TEST_SPLITS)
        for k, v in calc.items():
            assert v == pytest.approx(state["rounds"][r]["metrics"][k], rel=1e-6), (r, k)
