"""The embedded xTB datasets: real GFN2-xTB labels (tblite), molecules by RDKit, splits by
reaction, charge and spin reaching the calculator, determinism."""

import numpy as np
import pytest
from ase import Atoms

from al_lightning import keys as K
from al_lightning.data.molecules import (FOUNDATION_MOLECULES, ID_MOLECULES, OOD_MOLECULES, bonds,
                                         charge_and_multiplicity, embed, template_sites, xtb_calculator)
from al_lightning.data.simulate import label_frame
from al_lightning.data.xtb import (ID_KINDS, SPLITS, XTBFoundationSpec, XTBMoleculesSpec, choose_system,
                                   foundation_frames, system_frames)

TINY = XTBMoleculesSpec(seed=5, sizes={"pool": 30, "initial": 6, "val": 6, "test_id": 6, "test_ood_mol": 6,
                                       "test_ood_rxn": 6}, traj_frames_mean=6, traj_frames_max=12, path_images=4,
                        neb_steps=5)


def test_molecule_lists_are_disjoint_and_parse():
    lists = [set(ID_MOLECULES), set(OOD_MOLECULES), set(FOUNDATION_MOLECULES)]
    assert sum(map(len, lists)) == len(set().union(*lists))  # no SMILES in two lists
    from rdkit import Chem

    canon = [{Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in group} for group in lists]
    assert not (canon[0] & canon[1] or canon[0] & canon[2] or canon[1] & canon[2])  # nor the same molecule twice


def test_charge_and_multiplicity_from_rdkit():
    assert charge_and_multiplicity("C[NH3+]") == (1, 1)
    assert charge_and_multiplicity("CC[O-]") == (-1, 1)
    assert charge_and_multiplicity("C[CH2]") == (0, 2)
    assert charge_and_multiplicity("C[N+](=O)[O-]") == (0, 1)


def test_label_matches_a_direct_tblite_call_with_charge():
    from tblite.ase import TBLite

    atoms = embed("C[NH3+]", seed=1)
    frame = label_frame(atoms, "test", xtb_calculator)
    direct = atoms.copy()
    direct.calc = TBLite(method="GFN2-xTB", charge=1, multiplicity=1, verbosity=0)
    assert frame.info[K.REF_ENERGY] == pytest.approx(direct.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(frame.arrays[K.REF_FORCES], direct.get_forces(), atol=1e-8)
    neutral = atoms.copy()
    neutral.calc = TBLite(method="GFN2-xTB", charge=0, verbosity=0)
    assert abs(neutral.get_potential_energy() - frame.info[K.REF_ENERGY]) > 1.0  # the charge mattered


def test_xtb_forces_match_finite_differences():
    atoms = embed("CCO", seed=2)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    calc = lambda a: xtb_calculator(a, accuracy=0.01)  # noqa: E731  (tight SCF)
    forces = label_frame(atoms, "fd", calc).arrays[K.REF_FORCES]
    h = 1e-3
    for i, d in [(0, 0), (2, 1), (8, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, d] += h
        minus.positions[i, d] -= h
        fd = -(label_frame(plus, "fd", calc).info[K.REF_ENERGY] - label_frame(minus, "fd", calc).info[K.REF_ENERGY]) / (2 * h)
        assert forces[i, d] == pytest.approx(fd, abs=1e-2)


def test_template_sites():
    assert all(bond not in {(0, 1), (1, 2), (0, 2)} for bond in template_sites("C1CC1", "dissociation"))
    assert {tuple(sorted(s)) for s in template_sites("C1CC1", "ring_opening")} == {(0, 1), (0, 2), (1, 2)}
    assert template_sites("CCO", "isomerisation") == [] and len(template_sites("CC=CC", "isomerisation")) == 1
    h, a, b = template_sites("CCO", "h_shift")[0]
    mol = embed("CCO", seed=0)
    assert mol.numbers[h] == 1 and {(min(h, a), max(h, a)), (min(a, b), max(a, b))} <= bonds(mol)
    with pytest.raises(ValueError, match="unknown reaction template 'swap'"):
        template_sites("CCO", "swap")


def test_splits_by_reaction_never_share_a_reaction():
    """Pool/initial reactions (molecule, template, site) never appear in val/test_id: split by reaction."""
    spec = XTBMoleculesSpec(seed=1)
    train = {choose_system(s, i, spec) for s in ("pool", "initial") for i in range(400)}
    held = {choose_system(s, i, spec) for s in ("val", "test_id", "test_id_frames") for i in range(400)}
    reactive = lambda rs: {r for r in rs if r[1] != "md"}  # noqa: E731
    assert reactive(train) and reactive(held) and not reactive(train) & reactive(held)
    assert {r[1] for r in held} == set(ID_KINDS)  # every in-distribution kind is tested
    assert {choose_system("test_ood_rxn", i, spec)[1] for i in range(20)} == {"ring_opening"}
    assert {choose_system("test_ood_mol", i, spec)[0] for i in range(60)} <= set(OOD_MOLECULES)


def test_system_frames_info_and_determinism():
    for split in SPLITS:
        frames = system_frames(split, 1, TINY)
        again = system_frames(split, 1, TINY)
        assert frames and len(frames) == len(again)
        for f, g in zip(frames, again):
            np.testing.assert_array_equal(f.positions, g.positions)
            assert f.info[K.REF_ENERGY] == g.info[K.REF_ENERGY]
        for f in frames:
            assert {"smiles", "template", "reactive", "bond_change", K.CHARGE, K.MULTIPLICITY} <= set(f.info)
            assert f.info["reactive"] == (f.info["bond_change"] > 0) and not f.pbc.any()
            assert np.isfinite(f.arrays[K.REF_FORCES]).all()
            assert np.linalg.norm(f.arrays[K.REF_FORCES], axis=1).max() <= TINY.max_force
        if split not in ("pool", "test_id_frames"):
            assert len(frames) <= TINY.eval_frames_per_system


def test_reactive_paths_change_bonds():
    """A dissociation scan stretches its bond by 2 Å: its last path frame has the bond broken."""
    i = ID_KINDS.index("dissociation")
    frames = system_frames("pool", i, TINY)
    path = [f for f in frames if f.info[K.SOURCE] == "path"]
    assert path and path[-1].info["reactive"] and path[-1].info["template"] == "dissociation"


def test_foundation_frames_are_near_equilibrium():
    spec = XTBFoundationSpec(seed=2, sizes={"train": 10, "val": 2})
    frames = foundation_frames("train", 3, spec)
    assert frames and all(f.info["smiles"] == FOUNDATION_MOLECULES[3] for f in frames)
    reference = bonds(frames[0])
    assert all(bonds(f) == reference for f in frames)  # no bond broken or formed
    assert all(np.linalg.norm(f.arrays[K.REF_FORCES], axis=1).max() <= spec.max_force for f in frames)


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown split"):
        XTBMoleculesSpec(sizes={"test_ood_ads": 3})
    with pytest.raises(ValueError, match="pool_bias: unknown molecule/kind"):
        XTBMoleculesSpec(pool_bias={"CCCCCCCC": 2.0})


def test_charge_reaches_the_oracle_and_a_neutral_only_calculator_refuses():
    from al_lightning.oracle.oracles import CalculatorOracle, OracleError

    ion = embed("C[NH3+]", seed=3)
    labeled = CalculatorOracle("tblite.ase.TBLite", {"method": "GFN2-xTB", "verbosity": 0}).label([7], [ion])[0]
    expected = label_frame(ion, "x", xtb_calculator)
    assert labeled.info[K.REF_ENERGY] == pytest.approx(expected.info[K.REF_ENERGY], abs=1e-8)
    assert labeled.info[K.CHARGE] == 1  # recorded with the label
    emt_ion = Atoms("CuH", positions=[[0, 0, 0], [0, 0, 1.6]], info={K.CHARGE: 1})
    with pytest.raises(OracleError, match="EMT takes no charge parameter but the structure has"):
        CalculatorOracle("ase.calculators.emt.EMT").label([0], [emt_ion])
