"""The smoke campaign end to end (in-process CLI) and under 2-process CPU DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from al_lightning.acquisition.strategies import AcquisitionContext, RandomStrategy
from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
SPLITS = ["test_id", "test_ood_ads", "test_ood_cat", "test_ood_both"]


def _evaluate_file(model_path, campaign_dir):
    """Test metrics of an exported model, in this process, on the smoke config's data."""
    import yaml

    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.data.synthetic import EMTCatalysisSpec
    from al_lightning.model.metrics import evaluate
    from al_lightning.model.module import MACEModule

    data = yaml.safe_load((Path(campaign_dir) / "config.yaml").read_text())["data"]
    spec = EMTCatalysisSpec(**{**data["emt"], "sizes": data["emt"]["sizes"]})
    dm = ActiveDataModule(emt=spec, eval_batch_size=7)
    module = MACEModule(foundation=str(model_path), dtype="float64")
    return evaluate(module, dm)


def _check_campaign_dir(d: Path, budget=8, rounds=2, n0=16):
    state = json.loads((d / "campaign.json").read_text())
    assert state["status"] == "complete"
    assert [r["round"] for r in state["rounds"]] == list(range(rounds + 1))
    assert [r["n_labeled"] for r in state["rounds"]] == [n0 + budget * r for r in range(rounds + 1)]
    picked = [i for r in state["rounds"] for i in r["selected_ids"]]
    assert [len(r["selected_ids"]) for r in state["rounds"]] == [budget] * rounds + [0]
    assert len(set(picked)) == len(picked) and all(0 <= i < 120 for i in picked)
    for r in state["rounds"]:
        assert {f"{s}/{m}" for s in SPLITS for m in ("energy_mae", "forces_mae", "forces_rmse")} <= set(r["metrics"])
    calls = [json.loads(line)["id"] for line in (d / "oracle_calls.jsonl").read_text().splitlines()]
    assert sorted(calls) == sorted(picked)  # the oracle saw each acquired id exactly once
    assert (d / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| round |" in (d / "report.md").read_text()
    return state


@pytest.mark.slow
def test_smoke_campaign_outputs(tmp_path, monkeypatch, calculator_metrics):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE]) == 0
    d = tmp_path / "logs" / "smoke"
    state = _check_campaign_dir(d)
    # labeled structures written with mace's keys, the acquired ones tagged with their pool id
    from ase.io import read

    last = read(d / "round_002" / "labeled.extxyz", ":")
    assert len(last) == 32 and all("REF_energy" in a.info and "REF_forces" in a.arrays for a in last)
    bought = read(d / "round_001" / "acquired.extxyz", ":")
    assert [a.info["pool_id"] for a in bought] == state["rounds"][1]["selected_ids"]
    # TensorBoard holds round metrics for every split
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d / "tb" / "rounds"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for s in SPLITS + ["val"]:
        assert f"round/{s}/forces_mae" in tags and f"labels/{s}/energy_mae" in tags
    assert [e.step for e in acc.Scalars("round/test_id/forces_mae")] == [0, 1, 2]
    assert list(d.glob("tb/round_000/events.out.tfevents.*"))
    # the exported model reproduces the module's test metrics and loads in MACECalculator
    again = _evaluate_file(d / "round_002" / "model.model", d)
    for k in again:
        assert again[k] == pytest.approx(state["rounds"][2]["metrics"][k], rel=1e-9, abs=1e-12), k
    # EMA off here; EMA on (and after a resume): test_round_training.py
    calc = calculator_metrics(d / "round_002" / "model.model", d, SPLITS)
    for k, v in calc.items():
        assert v == pytest.approx(state["rounds"][2]["metrics"][k], rel=1e-6), k
    from mace.calculators import MACECalculator

    model = torch.load(d / "round_002" / "model.model", weights_only=False)
    calc = MACECalculator(model_paths=str(d / "round_002" / "model.model"), device="cpu", default_dtype="float64")
    atoms = last[-1].copy()
    atoms.calc = calc
    from al_lightning.data.graphs import atoms_to_data, collate
    from al_lightning.model.mace import model_z_table

    batch = collate([atoms_to_data(last[-1], model_z_table(model), float(model.r_max))])
    ours = model(batch.to_dict(), training=False, compute_force=True)
    assert atoms.get_potential_energy() == pytest.approx(float(ours["energy"][0].detach()), abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), ours["forces"].detach().numpy(), atol=1e-8)


def test_random_strategy_is_seeded():
    cands = np.arange(3, 50)
    ctx = lambda seed, r: AcquisitionContext(None, None, r, seed, 5, cands)  # noqa: E731
    assert RandomStrategy().plan(ctx(0, 1)) is None  # no pool pass
    a, b = RandomStrategy().pick(ctx(0, 1)), RandomStrategy().pick(ctx(0, 1))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5 and set(a.tolist()) <= set(cands.tolist())
    assert not np.array_equal(a, RandomStrategy().pick(ctx(1, 1)))
    assert not np.array_equal(a, RandomStrategy().pick(ctx(0, 2)))


@pytest.mark.slow
def test_smoke_campaign_under_two_process_ddp(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", SMOKE, "--trainer.strategy=ddp",
           "--trainer.devices=2", "--trainer.accelerator=cpu", f"--campaign.campaign_dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = _check_campaign_dir(out)
    # metrics of one checkpoint: 2 processes (no padded duplicates) == 1 process
    for r in (0, 2):
        single = _evaluate_file(out / f"round_{r:03d}" / "model.model", out)
        for k, v in single.items():
            assert state["rounds"][r]["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (r, k)
