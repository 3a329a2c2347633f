"""Fine-tuning a foundation file: head selection, E0 modes, lr defaults, TorchScript refusal,
the trust notice (small hand-built MACE files; the mace_run_train artifact is in
tests/features/test_feat_mace_trained.py)."""

import logging

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.io import write

from al_lightning import keys as K
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.model.mace import load_foundation, model_e0s
from al_lightning.model.module import MACEModule

ZS = [1, 8, 29, 78]
E0 = np.array([-1.0, -2.0, -3.0, -4.0])


def _mace(heads=None, seed=0):
    """Tiny float64 ScaleShiftMACE with ZBL pair repulsion (one E0 row / scale per head)."""
    from e3nn import o3
    from mace import modules

    n = len(heads or ["Default"])
    torch.manual_seed(seed)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.0, num_bessel=4, num_polynomial_cutoff=5, max_ell=1, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(ZS), hidden_irreps=o3.Irreps("8x0e+8x1o"),
        MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.stack([E0 - 0.5 * h for h in range(n)]),
        avg_num_neighbors=10.0, atomic_numbers=ZS, correlation=2, gate=torch.nn.functional.silu, radial_MLP=[16],
        atomic_inter_scale=[1.3 - 0.4 * h for h in range(n)], atomic_inter_shift=[0.1 * h for h in range(n)],
        heads=heads, pair_repulsion=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _structures():
    """Six rattled periodic structures whose compositions span H, O, Cu, Pt (full rank)."""
    out = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Pt", "fcc", a=3.92, cubic=True)]
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True)
    alloy[0].symbol = "Pt"
    out.append(alloy)
    s = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(s, "O", 1.5, "fcc")
    out.append(s)
    s = fcc100("Pt", size=(2, 2, 2), vacuum=5.0)
    add_adsorbate(s, "H", 1.2, "hollow")
    out.append(s)
    out.append(Atoms("CuO", positions=[[0, 0, 0], [1.9, 0.1, 0.2]], cell=[3.8, 3.8, 3.8], pbc=True))
    rng = np.random.default_rng(0)
    for a in out:
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    return out


def _predict(model, structures):
    """(energies (S,), forces list) of a model on ase structures, in float64."""
    from mace import data as mdata
    from mace.tools import AtomicNumberTable
    from mace.tools.torch_geometric.batch import Batch

    table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    graphs = [mdata.AtomicData.from_config(mdata.config_from_atoms(a), z_table=table, cutoff=float(model.r_max))
              for a in structures]
    out = model(Batch.from_data_list(graphs).to_dict(), compute_force=True)
    return out["energy"].detach().numpy(), out["forces"].detach().numpy()


@pytest.fixture()
def f64():
    torch.set_default_dtype(torch.float64)


@pytest.fixture()
def foundation(tmp_path, f64):
    path = tmp_path / "found.model"
    torch.save(_mace(), path)
    return path


def _labeled_files(tmp_path, model, delta):
    """initial/val files labeled E = E_model + Σ_i δ[Z_i] (forces: the model's)."""
    structures = _structures()
    energies, forces = _predict(model, structures)
    offset = dict(zip(ZS, delta))
    start = 0
    for a, e in zip(structures, energies):
        a.info[K.REF_ENERGY] = float(e) + sum(offset[int(z)] for z in a.numbers)
        a.arrays[K.REF_FORCES] = forces[start:start + len(a)]
        start += len(a)
    path = tmp_path / "labeled.extxyz"
    write(path, structures, format="extxyz")
    return {"initial": str(path), "val": str(path)}, structures


def test_refit_e0s_recovers_per_element_offsets(tmp_path, foundation):
    delta = np.array([0.3, -0.2, 0.5, -0.7])
    files, structures = _labeled_files(tmp_path, torch.load(foundation, weights_only=False), delta)
    kept = MACEModule(foundation=str(foundation), e0s="foundation")
    kept.build(ActiveDataModule(files=files))
    np.testing.assert_allclose(model_e0s(kept.net), E0, atol=0)  # "foundation": untouched
    module = MACEModule(foundation=str(foundation), e0s="refit")
    module.build(ActiveDataModule(files=files))
    np.testing.assert_allclose(model_e0s(module.net), E0 + delta, atol=1e-9)
    energies, _ = _predict(module.net, structures)
    np.testing.assert_allclose(energies, [a.info[K.REF_ENERGY] for a in structures], atol=1e-9)
    assert torch.equal(module.initial_state["atomic_energies_fn.atomic_energies"],
                       module.net.atomic_energies_fn.atomic_energies)  # reset_weights keeps the refit


@pytest.mark.parametrize("shift, refit", [(0.05, False), (30.0, True)])
def test_auto_e0s_refit_only_for_another_energy_reference(tmp_path, foundation, capsys, shift, refit):
    """Default (auto): labels offset by ~30 eV per element (another level of theory) get refitted
    E0s and one ``E0s: refit`` line; offsets below the labels' own per-atom spread keep the E0s."""
    delta = shift * np.array([1.0, -0.6, 0.8, -1.2])
    files, _ = _labeled_files(tmp_path, torch.load(foundation, weights_only=False), delta)
    module = MACEModule(foundation=str(foundation))
    module.build(ActiveDataModule(files=files))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "E0s:" in ln]
    assert len(lines) == 1 and lines[0].startswith("al-lightning: E0s: " + ("refit" if refit else "kept"))
    np.testing.assert_allclose(model_e0s(module.net), E0 + delta if refit else E0, atol=1e-9)


def test_zero_shot_stats_against_brute_force(tmp_path, foundation):
    """zero_shot's errors equal a per-structure loop over the model's own predictions."""
    from al_lightning.model.e0s import zero_shot

    model = torch.load(foundation, weights_only=False)
    files, structures = _labeled_files(tmp_path, model, np.array([0.3, -0.2, 0.5, -0.7]))
    for a in structures:  # perturb the force labels by a known amount
        a.arrays[K.REF_FORCES] = a.arrays[K.REF_FORCES] + 0.25
    write(files["initial"], structures, format="extxyz")
    dm = ActiveDataModule(files=files)
    module = MACEModule(foundation=str(foundation), e0s="foundation")
    module.build(dm)
    stats = zero_shot(module.net, dm.stats_dataloader())
    energies, forces = _predict(model, structures)
    per_atom = [(a.info[K.REF_ENERGY] - e) / len(a) for a, e in zip(structures, energies)]
    assert stats["energy_mae"] == pytest.approx(np.mean(np.abs(per_atom)), rel=1e-9)
    counts = np.array([[np.sum(a.numbers == z) for z in ZS] for a in structures], dtype=float)
    e_ref = np.array([a.info[K.REF_ENERGY] for a in structures])
    sol = np.linalg.lstsq(counts[:, counts.sum(0) > 0], e_ref, rcond=None)[0]
    baseline = e_ref - counts[:, counts.sum(0) > 0] @ sol
    assert stats["energy_spread"] == pytest.approx(np.mean(np.abs(baseline) / counts.sum(1)), rel=1e-6)
    assert stats["energy_mae_refit"] == pytest.approx(0.0, abs=1e-9)  # the offsets are exactly per element
    assert stats["forces_mae"] == pytest.approx(0.25, rel=1e-9)
    ref = np.concatenate([a.arrays[K.REF_FORCES].ravel() for a in structures])
    assert stats["forces_spread"] == pytest.approx(np.mean(np.abs(ref)), rel=1e-9)


def test_decide_e0s_lines():
    from al_lightning.model.e0s import decide_e0s

    base = dict(n=30, energy_mae=29.5, energy_mae_refit=0.07, energy_spread=0.1, forces_mae=0.9, forces_spread=0.8)
    refit, line, poor = decide_e0s(base)
    assert refit and line.startswith("E0s: refit (") and "29.5 eV/atom" in line
    assert "zero-shot" in poor and "poor prior" in poor and "0.9 eV/Å" in poor
    refit, line, poor = decide_e0s({**base, "energy_mae": 0.041, "energy_mae_refit": 0.015, "energy_spread": 0.015,
                                    "forces_mae": 0.19, "forces_spread": 0.36})
    assert not refit and line.startswith("E0s: kept the foundation's (") and poor is None


def test_refit_rank_deficient_warns_with_the_e0s_hint(tmp_path, foundation):
    cuo = [a for a in _structures() if a.get_chemical_formula() == "CuO"][0]
    pair = [cuo, cuo.copy()]  # one stoichiometry: Cu and O offsets are not separable
    pair[1].positions[1, 0] += 0.1
    for a in pair:
        a.info[K.REF_ENERGY], a.arrays[K.REF_FORCES] = -5.0, np.zeros((2, 3))
    path = tmp_path / "cuo.extxyz"
    write(path, pair, format="extxyz")
    module = MACEModule(foundation=str(foundation), e0s="refit")
    with pytest.warns(UserWarning, match=r"refit on the foundation is rank-deficient.*pass explicit e0s, "
                                         r"e\.g\. --model\.e0s '\{H: .*--model\.e0s foundation"):
        module.build(ActiveDataModule(files={"initial": str(path), "val": str(path)}))


def test_explicit_e0s_on_a_foundation(tmp_path, foundation):
    files, _ = _labeled_files(tmp_path, torch.load(foundation, weights_only=False), np.zeros(4))
    module = MACEModule(foundation=str(foundation), e0s={"Cu": -9.5})
    module.build(ActiveDataModule(files=files))
    np.testing.assert_allclose(model_e0s(module.net), [-1.0, -2.0, -9.5, -4.0], atol=0)
    with pytest.raises(ValueError, match=r"model e0s name elements \['U'\] that the foundation does not cover"):
        MACEModule(foundation=str(foundation), e0s={"U": 1.0}).build(ActiveDataModule(files=files))


def test_lr_defaults_scratch_vs_foundation(tmp_path, foundation):
    assert MACEModule().hparams.lr == 1e-2
    assert MACEModule(lr=3e-3).hparams.lr == 3e-3
    files, _ = _labeled_files(tmp_path, torch.load(foundation, weights_only=False), np.zeros(4))
    module = MACEModule(foundation=str(foundation))
    module.build(ActiveDataModule(files=files))
    assert module.configure_optimizers()["optimizer"].param_groups[0]["lr"] == 1e-3
    assert MACEModule(foundation=str(foundation), lr=2e-4).hparams.lr == 2e-4


@pytest.mark.parametrize("kwargs, message", [
    (dict(e0s="refit"), "model e0s 'refit' needs model.foundation"),
    (dict(e0s="foundation"), "model e0s 'foundation' needs model.foundation"),
    (dict(e0s="average"), "model e0s must be a {symbol: eV} dict, 'auto', 'foundation' or 'refit'"),
    (dict(head="omat"), "model head needs model.foundation"),
    (dict(lr=0.0), "model lr must be > 0"),
])
def test_option_errors(kwargs, message):
    with pytest.raises(ValueError, match=None) as info:
        MACEModule(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


class _Lines(logging.Handler):
    """Messages of the logger rank_zero_info writes to (the CLI may stop its propagation)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def _head_reference(model, structures, head):
    """Energies of a multi-head model evaluated on ``head`` (the data carry the head index)."""
    from mace import data as mdata
    from mace.tools import AtomicNumberTable
    from mace.tools.torch_geometric.batch import Batch

    graphs = []
    for a in structures:
        cfg = mdata.config_from_atoms(a)
        cfg.head = head
        graphs.append(mdata.AtomicData.from_config(cfg, z_table=AtomicNumberTable(ZS), cutoff=4.0, heads=model.heads))
    out = model(Batch.from_data_list(graphs).to_dict(), compute_force=True)
    return out["energy"].detach().numpy(), out["forces"].detach().numpy()


def test_head_selection_matches_the_multihead_model(tmp_path, f64):
    multi = _mace(heads=["pt_head", "dft", "r2scan"])
    path = tmp_path / "multi.model"
    torch.save(multi, path)
    structures = _structures()[2:5]
    for head in ("dft", "r2scan", "pt_head"):
        single = load_foundation(path, head=head)
        assert single.heads == [head] and hasattr(single, "pair_repulsion_fn")
        e, f = _predict(single, structures)
        e_ref, f_ref = _head_reference(multi, structures, head)
        np.testing.assert_allclose(e, e_ref, rtol=1e-12)
        np.testing.assert_allclose(f, f_ref, atol=1e-12)
    assert abs(_head_reference(multi, structures, "dft")[0] - _head_reference(multi, structures, "r2scan")[0]).max() > 1e-3
    with _Lines() as log:
        default = load_foundation(path)  # as mace_run_train: the first head that is not pt_head
    assert default.heads == ["dft"]
    assert [m for m in log.lines if "using 'dft'" in m and "model.head" in m]
    with pytest.raises(ValueError) as info:
        load_foundation(path, head="omat")
    assert str(info.value) == (f"foundation model {path}: no head 'omat'; its heads are ['pt_head', 'dft', 'r2scan']")


def test_single_head_file_and_unknown_head(foundation):
    assert load_foundation(foundation, head="Default").heads == ["Default"]
    with pytest.raises(ValueError, match=r"no head 'dft'; its heads are \['Default'\]"):
        load_foundation(foundation, head="dft")


def test_torchscript_file_refused_in_one_line(tmp_path):
    path = tmp_path / "net_compiled.model"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(ValueError) as info:
        load_foundation(path)
    msg = str(info.value)
    assert "\n" not in msg and "TorchScript" in msg and "NTK feature hooks need the eager model" in msg
    assert msg.endswith(f"pass {tmp_path / 'net.model'} instead")


def test_trust_notice_logged_once_per_file(tmp_path, f64):
    path = tmp_path / "trust_me.model"
    torch.save(_mace(), path)
    with _Lines() as log:
        load_foundation(path)
        load_foundation(path)
    lines = [m for m in log.lines if "trust_me.model" in m]
    assert len(lines) == 1 and "can run arbitrary code" in lines[0] and "trusted source" in lines[0]
