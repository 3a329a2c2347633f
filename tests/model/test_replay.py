"""Foundation replay: mixed at its ratio every epoch with its loss weight, pseudolabels are the frozen
foundation's predictions, options fail in one line, and a killed campaign with replay resumes to
the uninterrupted selections."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from al_lightning import keys as K
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.io import read_structures, write_extxyz
from al_lightning.model.module import MACEModule
from al_lightning.model.replay import ReplayConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(hidden_irreps="8x0e+8x1o", mlp_irreps="8x0e", radial_mlp=[16, 16], max_ell=1, r_max=4.0)


@pytest.fixture(scope="module")
def tiny_foundation(tiny_spec, tmp_path_factory):
    from al_lightning.model.mace import MACEConfig

    torch.manual_seed(0)
    module = MACEModule(model=MACEConfig(**TINY), dtype="float64")
    dm = ActiveDataModule(emt=tiny_spec)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    path = tmp_path_factory.mktemp("foundation") / "tiny.model"
    torch.save(module.net, path)
    return str(path)


def _setup(spec, foundation, replay):
    module = MACEModule(foundation=foundation, e0s="foundation", dtype="float64", replay=replay)
    dm = ActiveDataModule(emt=spec, batch_size=4)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    return module, dm


def test_replay_frames_are_mixed_at_the_ratio_every_epoch_with_their_weight(tiny_spec, tiny_paths, tmp_path):
    module = MACEModule(model=None, dtype="float64")
    dm = ActiveDataModule(emt=tiny_spec, batch_size=5, seed=3)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    frames = read_structures(tiny_paths["val"])
    write_extxyz(tmp_path / "replay.extxyz", frames)
    dm.attach_replay({"replay": tmp_path / "replay.extxyz"}, weight=0.25, ratio=1.5, seed=1)
    n_labeled = len(dm.labeled_structures())
    loader = dm.train_dataloader()
    drawn = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)  # what Lightning does before every epoch
        ids, weights = [], []
        for batch in loader:
            ids += batch[K.STRUCTURE_ID].tolist()
            weights += batch[K.ENERGY_WEIGHT].tolist()
        replay = [(i, w) for i, w in zip(ids, weights) if i <= -1_000_000]
        assert len(replay) == round(1.5 * n_labeled) and len(ids) == n_labeled + len(replay)
        assert all(w == 0.25 for _, w in replay) and all(w == 1.0 for i, w in zip(ids, weights) if i > -1_000_000)
        drawn.append(sorted(i for i, _ in replay))
    assert drawn[0] != drawn[1]  # a fresh draw each epoch
    assert "test_foundation" not in dm.test_splits  # no test_foundation file given


def test_pseudolabels_are_the_frozen_foundations_predictions(tiny_spec, tiny_foundation):
    cfg = ReplayConfig(source="pseudolabel", size=6, test_size=3, seed=2)
    module, dm = _setup(tiny_spec, tiny_foundation, cfg)
    reserved = dm.replay["reserved"]
    assert len(reserved) == 9 and not set(reserved) & set(dm.candidate_ids().tolist())
    assert "test_foundation" in dm.test_splits and "test_foundation" in module.eval_splits
    replay = read_structures(dm.replay["replay"]) + read_structures(dm.replay["test_foundation"])
    assert sorted(a.info["pool_id"] for a in replay) == reserved
    frozen = torch.load(tiny_foundation, weights_only=False).double().eval()
    pool = dm.pool_dataset()
    for atoms in replay:  # one structure at a time through the untouched foundation
        from al_lightning.data.graphs import collate

        data = collate([pool[int(atoms.info["pool_id"])]])
        out = frozen(data.to_dict(), training=False, compute_force=True)
        assert atoms.info[K.REF_ENERGY] == pytest.approx(float(out["energy"]), rel=1e-9)
        np.testing.assert_allclose(atoms.arrays[K.REF_FORCES], out["forces"].detach().numpy(), rtol=0, atol=1e-8)  # extxyz: 8 decimals


@pytest.mark.parametrize("args, message", [
    (["--model.replay.sourse=pretraining"], "model.replay.sourse"),
    (["--model.replay.source=pretrained"], "model.replay.source must be one of ('pretraining', 'pseudolabel')"),
    (["--model.replay.source=pretraining", "--model.replay.weight=0"], "model.replay.weight must be > 0"),
    (["--model.replay.source=pretraining", "--model.foundation=null"], "model.replay needs model.foundation"),
    (["--model.replay.head=pt_head"], "model.replay.head is read with a replay source only"),
])
def test_replay_option_errors_are_one_line(args, message, tmp_path, capsys):
    from al_lightning.cli import main

    argv = ["fit", "-c", str(ROOT / "configs" / "demo.yaml"), f"--campaign.campaign_dir={tmp_path / 'c'}", "--dry_run"]
    assert main([*argv, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[-1500:]
    assert len([ln for ln in err.splitlines() if message in ln]) == 1


def test_pretraining_replay_of_a_file_without_a_card_is_refused(tiny_spec, tiny_foundation):
    with pytest.raises(ValueError, match="the card of .* names none .* use source: pseudolabel"):
        _setup(tiny_spec, tiny_foundation, ReplayConfig(source="pretraining"))


def _campaign(out, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AL_FAULT", None)
    if fault:
        env["AL_FAULT"] = fault
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", str(ROOT / "configs" / "smoke.yaml"),
           "--trainer.max_epochs=2", "--campaign.strategy=pv_lcmd",
           "--campaign.strategy_kwargs={shortlist: 30, batch_size: 16, calibration: false}",
           "--model.foundation=emt", "--model.replay.source=pretraining", "--model.replay.size=24",
           "--model.replay.test_size=8", f"--campaign.campaign_dir={out}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_campaign_with_replay_resumes_to_the_uninterrupted_selections(tmp_path):
    ref = _campaign(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _campaign(tmp_path / "c", fault="fit:7")
    assert killed.returncode == -9, killed.stderr[-1500:]
    resumed = _campaign(tmp_path / "c")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    states = [json.loads((tmp_path / d / "campaign.json").read_text()) for d in ("ref", "c")]
    assert [r["selected_ids"] for r in states[0]["rounds"]] == [r["selected_ids"] for r in states[1]["rounds"]]
    assert all("test_foundation/forces_mae" in r["metrics"] for r in states[1]["rounds"])
    assert states[1]["fingerprint"]["replay"]["source"] == "pretraining"
