"""Replay on a two-head foundation (mace's multihead fine-tuning layout, heads ["Default", "pt_head"],
built offline with mace's own tools): labels, splits and pool carry the campaign head, replay frames
and test_foundation the replay head; the replay head's readout is trained by replay frames only, its
E0s stay the foundation's, pseudolabels are its predictions; a campaign exports and resumes both heads;
the options fail in one line."""

import json

import numpy as np
import pytest
import torch

from al_lightning import keys as K
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.graphs import atoms_to_data, collate
from al_lightning.data.io import read_structures
from al_lightning.model.mace import model_e0s, model_heads, model_z_table
from al_lightning.model.module import MACEModule
from al_lightning.model.replay import ReplayConfig
from test_replay import ROOT, tiny_foundation  # noqa: F401  (a module-scoped fixture: the single-head tiny foundation)

HEADS = ["Default", "pt_head"]  # the order mace_run_train's multihead fine-tuning writes
OFFSET = 0.5  # eV per atom on the Default head's E0s: the two heads disagree by 0.5 eV x atoms


@pytest.fixture(scope="module")
def two_head(tiny_foundation, tmp_path_factory):  # noqa: F811
    """The tiny foundation as a two-head model, as mace's multihead fine-tuning builds one
    (extract_config_mace_model, then load_foundations_elements with the readouts); the Default head's
    E0s shifted by OFFSET."""
    from mace.tools.finetuning_utils import load_foundations_elements
    from mace.tools.scripts_utils import extract_config_mace_model

    torch.set_default_dtype(torch.float64)
    single = torch.load(tiny_foundation, weights_only=False).double()
    e0 = single.atomic_energies_fn.atomic_energies.detach().reshape(-1).numpy()
    config = {**extract_config_mace_model(single), "heads": HEADS, "atomic_energies": np.stack([e0 + OFFSET, e0])}
    multi = load_foundations_elements(single.__class__(**config), single, model_z_table(single), load_readout=True,
                                      max_L=1, default_dtype=torch.float64)
    path = tmp_path_factory.mktemp("two_head") / "two_head.model"
    torch.save(multi, path)
    return str(path)


def _energies(model, frames, head):
    """(S,) energies of ``model`` on ``frames`` through ``head`` (mace's head index; None: a single head)."""
    heads = model_heads(model) if head else None
    batch = collate([atoms_to_data(a, model_z_table(model), float(model.r_max), heads=heads, head=head) for a in frames])
    return model(batch.to_dict(), training=False, compute_force=True)["energy"].detach().numpy()


def _setup(spec, foundation, e0s="foundation", model_head="Default", **replay):
    options = {"source": "pseudolabel", "size": 6, "test_size": 3, "seed": 2, **replay}
    module = MACEModule(foundation=foundation, head=model_head, e0s=e0s, dtype="float64", replay=ReplayConfig(**options))
    dm = ActiveDataModule(emt=spec, batch_size=4)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    return module, dm


def _heads_by_kind(loader):
    """{"replay": set of head indices of replay frames, "labels": of the other graphs}."""
    out = {"replay": set(), "labels": set()}
    for batch in loader:
        for sid, head in zip(batch[K.STRUCTURE_ID].tolist(), batch[K.HEAD].tolist()):
            out["replay" if sid <= -1_000_000 else "labels"].add(head)
    return out


def test_graphs_carry_their_heads_and_pseudolabels_are_the_replay_heads(tiny_spec, two_head, tiny_foundation):  # noqa: F811
    module, dm = _setup(tiny_spec, two_head)
    assert module.head_pair == ("Default", "pt_head") and model_heads(module.net) == HEADS
    assert _heads_by_kind(dm.train_dataloader()) == {"replay": {1}, "labels": {0}}
    assert _heads_by_kind(dm.member_view(7).train_dataloader()) == {"replay": {1}, "labels": {0}}  # committees
    for split in ("val", "test_id"):
        assert _heads_by_kind(dm._eval_loader(split)) == {"replay": set(), "labels": {0}}
    assert {h for b in dm._eval_loader("test_foundation") for h in b[K.HEAD].tolist()} == {1}
    assert {h for b in dm.pool_dataloader(range(10)) for h in b[K.HEAD].tolist()} == {0}  # acquisition features
    frames = read_structures(dm.replay["replay"]) + read_structures(dm.replay["test_foundation"])
    labels = np.array([a.info[K.REF_ENERGY] for a in frames])
    single = torch.load(tiny_foundation, weights_only=False).double()  # = the pt_head
    np.testing.assert_allclose(labels, _energies(single, frames, None), rtol=0, atol=1e-7)
    np.testing.assert_allclose(_energies(module.net, frames, "Default") - labels,
                               [OFFSET * len(a) for a in frames], atol=1e-7)


def test_acquisition_features_see_the_campaign_head(tiny_spec, two_head):
    from al_lightning.features import ActivationFeatures, NTKEnergyForce
    from al_lightning.model.mace import load_foundation

    module, dm = _setup(tiny_spec, two_head)
    batch = next(iter(dm.pool_dataloader(range(8))))
    single = MACEModule(foundation=two_head, head="Default", e0s="foundation", dtype="float64")  # reduced, no replay
    single_dm = ActiveDataModule(emt=tiny_spec)
    single.build(single_dm)
    for features in (NTKEnergyForce(params="readouts", sketch_dim=None), ActivationFeatures()):
        two, one = (features.rows(m.net, b) for m, b in
                    ((module, batch), (single, next(iter(single_dm.pool_dataloader(range(8)))))))
        torch.testing.assert_close(two.energy, one.energy)
        assert int((two.rows.reshape(8, -1).abs().sum(0) > 0).sum()) == int((one.rows.reshape(8, -1).abs().sum(0) > 0).sum())
    replay_head = load_foundation(two_head, "pt_head")
    assert (replay_head(batch.to_dict(), compute_force=True)["energy"] - two.energy).abs().min() > 0.1


def test_replay_frames_train_the_replay_heads_readout_and_labels_the_campaign_heads(tiny_spec, two_head):
    module, dm = _setup(tiny_spec, two_head)
    mix = dm.train_dataloader().dataset
    with torch.no_grad():  # moved off the foundation, whose replay head reproduces its own pseudolabels (zero loss)
        for p in module.net.interactions.parameters():
            p.mul_(1.05)
    for items, trained in ((range(mix.n_labeled, len(mix)), 1), (range(mix.n_labeled), 0)):
        module.net.zero_grad()
        module.shared_step(collate([mix[i] for i in items][:4]), "train").backward()
        grad = module.net.readouts[0].linear.weight.grad.reshape(-1, len(HEADS))  # one column per head
        assert grad[:, trained].abs().max() > 1e-6 and grad[:, 1 - trained].abs().max() == 0


def test_e0_refit_changes_the_campaign_heads_row_only(tiny_spec, two_head):
    found = torch.load(two_head, weights_only=False).double()
    module, _ = _setup(tiny_spec, two_head, e0s="refit")
    np.testing.assert_array_equal(model_e0s(module.net, 1), model_e0s(found, 1))
    assert np.abs(model_e0s(module.net, 0) - model_e0s(found, 0)).max() > 1e-3


@pytest.mark.parametrize("foundation, head, replay_head, message", [
    ("two", "Default", "Default", "model.replay.head 'Default' is the campaign head (model.head); name another"),
    ("two", None, "omat", "model.replay.head 'omat' is not a head of the file; name another of the heads"),
    ("one", None, "pt_head", "model.replay.head 'pt_head': foundation model"),
    ("two", "omat", None, "no head 'omat'; its heads are ['Default', 'pt_head']"),
])
def test_head_options_fail_in_one_line(tiny_spec, two_head, tiny_foundation, foundation, head, replay_head, message):  # noqa: F811
    with pytest.raises(ValueError) as info:
        _setup(tiny_spec, two_head if foundation == "two" else tiny_foundation, model_head=head, head=replay_head)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="model.replay.head is read with a replay source only"):
        ReplayConfig(head="pt_head")


def test_two_head_campaign_trains_exports_and_resumes_both_heads(tmp_path, two_head, monkeypatch):
    from al_lightning.cli import main

    seen = {"replay": set(), "labels": set(), "files": None}
    step = MACEModule.training_step

    def recording(self, batch, batch_idx):
        for kind, heads in _heads_by_kind([batch]).items():
            seen[kind] |= heads
        seen["files"] = self.trainer.datamodule.replay
        return step(self, batch, batch_idx)

    monkeypatch.setattr(MACEModule, "training_step", recording)
    d = tmp_path / "c"
    argv = ["fit", "-c", str(ROOT / "configs" / "smoke.yaml"), "--trainer.max_epochs=2", "--campaign.rounds=1",
            f"--model.foundation={two_head}", "--model.head=Default", "--model.e0s=foundation", "--model.lr=0.003",
            "--model.replay.source=pseudolabel", "--model.replay.size=12", "--model.replay.test_size=6",
            f"--campaign.campaign_dir={d}"]
    assert main(argv) == 0
    files = seen.pop("files")
    assert files["head"] == "pt_head" and seen == {"replay": {1}, "labels": {0}}
    model = torch.load(d / "round_001" / "model.model", weights_only=False)
    assert model_heads(model) == HEADS  # the exported file keeps both heads
    found = torch.load(two_head, weights_only=False)
    moved = (model.readouts[0].linear.weight - found.readouts[0].linear.weight).reshape(-1, 2).abs().amax(0)
    assert (moved > 1e-5).all()  # each head's readout trained (by its own frames: the gradient test)
    metrics = json.loads((d / "campaign.json").read_text())["rounds"][1]["metrics"]
    tf = read_structures(files["test_foundation"])
    n = np.array([len(a) for a in tf])
    ref = np.array([a.info[K.REF_ENERGY] for a in tf])
    mae = {h: float(np.mean(np.abs(_energies(model, tf, h) - ref) / n)) for h in HEADS}
    assert metrics["test_foundation/energy_mae"] == pytest.approx(mae["pt_head"], rel=1e-6)
    assert mae["Default"] > mae["pt_head"] + 0.1  # the campaign head would be ~OFFSET off
    assert main([*argv[:4], "--campaign.rounds=2", *argv[5:]]) == 0  # resumes: the two-head net loads round 1
    assert len(json.loads((d / "campaign.json").read_text())["rounds"]) == 3
