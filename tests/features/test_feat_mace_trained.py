"""A foundation file written by mace's own trainer (``mace_run_train --model ScaleShiftMACE
--pair_repulsion``, tiny, 2 epochs, CPU, float64): it loads as a foundation, its NTK rows
match per-structure autograd, it fine-tunes through Lightning and exports to a file that
``MACECalculator`` evaluates to our energies; the TorchScript twin is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from ase.io import read, write

from al_lightning import keys as K
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.features import compute_features, energy_ntk, force_ntk, resolve_params
from al_lightning.model.loss import energy_force_loss
from al_lightning.model.mace import load_foundation
from al_lightning.model.module import MACEModule

ROOT = Path(__file__).resolve().parents[2]
MACE_RUN_TRAIN_ARGS = [
    "--name", "tiny", "--model", "ScaleShiftMACE", "--pair_repulsion", "--train_file", "train.xyz",
    "--valid_fraction", "0.2", "--energy_key", K.REF_ENERGY, "--forces_key", K.REF_FORCES, "--E0s", "average",
    "--r_max", "4.0", "--num_channels", "8", "--max_L", "1", "--MLP_irreps", "8x0e", "--num_interactions", "2",
    "--correlation", "2", "--num_radial_basis", "4", "--radial_MLP", "[16]", "--batch_size", "8",
    "--valid_batch_size", "16", "--max_num_epochs", "2", "--device", "cpu", "--default_dtype", "float64",
    "--seed", "1", "--num_workers", "0",
]


@pytest.fixture(scope="session")
def mace_artifact(tmp_path_factory, tiny_paths):
    """tiny.model + tiny_compiled.model trained by mace_run_train on the tiny EMT pool (60 frames)."""
    d = tmp_path_factory.mktemp("mace_run_train")
    frames = read(tiny_paths["pool"], ":")
    for a in frames:  # plain extxyz: labels only (no FixAtoms mask, no bookkeeping info)
        a.set_constraint()
        a.info = {K.REF_ENERGY: a.info[K.REF_ENERGY]}
        a.arrays = {k: v for k, v in a.arrays.items() if k in ("numbers", "positions", K.REF_FORCES)}
    write(d / "train.xyz", frames, format="extxyz")
    exe = Path(sys.executable).with_name("mace_run_train")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *MACE_RUN_TRAIN_ARGS], cwd=d, env=env, capture_output=True, text=True,
                          timeout=240)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        pytest.fail(f"mace_run_train failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return types.SimpleNamespace(model=d / "tiny.model", compiled=d / "tiny_compiled.model", seconds=seconds)


@pytest.fixture(scope="module")
def files(tiny_paths):
    return {s: str(tiny_paths[s]) for s in ("initial", "val", "test_id")}


def _module(artifact, files, **kwargs):
    module = MACEModule(foundation=str(artifact.model), dtype="float64", **kwargs)
    dm = ActiveDataModule(files=files, batch_size=4, eval_batch_size=16)
    module.build(dm)
    return module, dm


def test_artifact_loads_as_foundation(mace_artifact, files):
    raw = torch.load(mace_artifact.model, weights_only=False, map_location="cpu")
    module, dm = _module(mace_artifact, files)
    net = module.net
    assert type(net).__name__ == "ScaleShiftMACE" and net.heads == ["Default"]
    assert getattr(net, "pair_repulsion", False) and hasattr(net, "pair_repulsion_fn")  # what forward tests
    assert module.hparams.lr == 1e-3
    batch = next(iter(dm.stats_dataloader())).to_dict()
    ours = net(dict(batch), compute_force=True)["energy"]
    theirs = raw(dict(batch), compute_force=True)["energy"]
    assert torch.equal(ours.detach(), theirs.detach())
    assert mace_artifact.seconds < 60, f"mace_run_train took {mace_artifact.seconds:.1f} s"


@pytest.fixture(scope="module")
def artifact_data(mace_artifact, tiny_paths, brute):
    """The loaded artifact and 5 graphs of two sizes (13 and 14 atoms) in its element table."""
    from al_lightning.data.graphs import atoms_to_data
    from al_lightning.model.mace import model_r_max, model_z_table

    with brute.default_dtype(torch.float64):
        model = load_foundation(mace_artifact.model).eval()
        structures = read(tiny_paths["initial"], ":3") + read(tiny_paths["test_ood_ads"], ":2")
        graphs = [atoms_to_data(a, model_z_table(model), model_r_max(model), i) for i, a in enumerate(structures)]
    return model, graphs


@pytest.mark.parametrize("preset", ["readouts", "readouts+products", "readouts+last_interaction"])
def test_artifact_ntk_matches_brute_force(artifact_data, preset, brute):
    model, graphs = artifact_data
    batch = brute.to_batch(graphs, ids=range(len(graphs)))
    names = [t.name for t in resolve_params(model, preset).targets]
    phi = energy_ntk(model, batch, preset)
    ref = brute.energy(model, graphs, names)
    assert ref.abs().max() > 1e-3
    assert (phi - ref).abs().max() < 1e-10 * max(1.0, ref.abs().max().item())
    J = force_ntk(model, batch, preset, mode="exact")
    for g in (0, 4):  # a 13-atom and a 14-atom structure (padding)
        n = graphs[g].positions.shape[0]
        ref_j = brute.jacobian(model, graphs[g], names)
        assert ref_j.abs().max() > 1e-4
        assert (J[g, : 3 * n] - ref_j).abs().max() < 1e-10 * max(1.0, ref_j.abs().max().item())


def test_perturbation_hooks_leave_pair_repulsion_outputs_intact(artifact_data, brute):
    model, graphs = artifact_data
    batch = brute.to_batch(graphs, ids=range(len(graphs)))
    plain = model(brute.to_batch(graphs), compute_force=True)
    feats = compute_features(model, batch, "readouts+products", force_mode="direction")
    assert torch.allclose(feats.energy, plain["energy"].detach(), rtol=0, atol=1e-12)
    assert torch.allclose(feats.forces, plain["forces"].detach(), rtol=0, atol=1e-12)
    data = brute.to_batch(graphs)
    zbl = model.pair_repulsion_fn(*_edge_inputs(model, data))
    assert zbl.abs().max() > 0  # the ZBL term is live in these outputs


def _edge_inputs(model, data):
    from mace.modules.utils import get_edge_vectors_and_lengths

    _, lengths = get_edge_vectors_and_lengths(data["positions"], data["edge_index"], data["shifts"])
    return lengths, data["node_attrs"], data["edge_index"], model.atomic_numbers


def _train_loss(module, dm) -> float:
    """Mean loss over the labeled set (same weights as training), no update."""
    total, n = 0.0, 0
    for batch in dm.stats_dataloader():
        out = module(batch)
        loss = energy_force_loss(out[K.OUT_ENERGY], batch[K.ENERGY], out[K.OUT_FORCES], batch[K.FORCES],
                                 batch[K.NUM_ATOMS], batch[K.BATCH], batch[K.FREE_MASK], batch[K.ENERGY_WEIGHT],
                                 batch[K.FORCES_WEIGHT], module.hparams.energy_weight, module.hparams.forces_weight,
                                 module.hparams.loss, module.hparams.huber_delta)["loss"]
        g = int(batch[K.NUM_ATOMS].numel())
        total, n = total + float(loss.detach()) * g, n + g
    return total / n


def test_artifact_fine_tunes_and_exports(mace_artifact, files, tmp_path):
    from mace.calculators import MACECalculator

    from al_lightning.campaign.outputs import export_model

    pl.seed_everything(0)
    module, dm = _module(mace_artifact, files)
    before = _train_loss(module, dm)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         inference_mode=False, use_distributed_sampler=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    after = _train_loss(module, dm)
    assert after < (1 - 2e-3) * before, (before, after)  # seen: 0.6525 -> 0.6495 at the default lr 1e-3
    path = tmp_path / "finetuned.model"
    export_model(module.net, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    structures = read(files["test_id"], ":4")
    batch = next(iter(dm._eval_loader("test_id")))
    ours = module(batch)
    for g, atoms in enumerate(structures):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(float(ours[K.OUT_ENERGY][g].detach()), rel=1e-10, abs=1e-10)
        lo, hi = int(batch[K.PTR][g]), int(batch[K.PTR][g + 1])
        np.testing.assert_allclose(atoms.get_forces(apply_constraint=False), ours[K.OUT_FORCES][lo:hi].detach().numpy(), atol=1e-9)


def test_compiled_model_refused_in_one_line(mace_artifact, files, tmp_path, capsys):
    from al_lightning.cli import main

    with pytest.raises(ValueError) as info:
        load_foundation(mace_artifact.compiled)
    expected = (f"foundation model {mace_artifact.compiled}: a TorchScript (compiled) file; the NTK feature hooks "
                f"need the eager model: pass {mace_artifact.model} instead")
    assert str(info.value) == expected
    camp = tmp_path / "camp"
    code = main(["fit", "-c", str(ROOT / "configs" / "smoke.yaml"), "--data.emt", "null", "--data.files",
                 json.dumps(files), "--trainer.max_epochs=1", "--campaign.rounds=0",
                 f"--campaign.campaign_dir={camp}", "--model.foundation", str(mace_artifact.compiled)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2
    assert err[-1] == f"al-lightning: error: {expected}"
    assert not (camp / "campaign.json").exists()
