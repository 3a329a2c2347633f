"""Model construction: E0 least squares, trainable patterns, foundation loading."""

import numpy as np
import pytest
import torch
from ase import Atoms

from al_lightning import keys as K
from al_lightning.model.mace import fit_e0s, load_foundation, set_trainable, z_table_from


def _structure(symbols, energy):
    a = Atoms(symbols)
    a.info[K.REF_ENERGY] = energy
    return a


def test_e0_fit_recovers_reference_energies():
    e0 = {"H": -1.5, "O": -4.25, "Cu": -0.75}
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(12):
        counts = rng.integers(0, 4, size=3)
        symbols = "".join(f"{s}{n}" for s, n in zip(e0, counts) if n) or "H"
        a = Atoms(symbols)
        a.info[K.REF_ENERGY] = sum(e0[s] for s in a.get_chemical_symbols())
        structures.append(a)
    table = z_table_from(list(e0))
    fitted = fit_e0s(structures, table)
    expected = [e0["H"], e0["O"], e0["Cu"]]  # table sorted by Z: H(1), O(8), Cu(29)
    np.testing.assert_allclose(fitted, expected, atol=1e-10)


def test_e0_fit_warns_when_rank_deficient():
    structures = [_structure("CuO", -5.0), _structure("Cu2O2", -10.0)]  # one stoichiometry
    with pytest.warns(UserWarning, match="rank-deficient.*pass explicit e0s"):
        e0s = fit_e0s(structures, z_table_from(["O", "Cu"]))
    assert e0s.sum() == pytest.approx(-5.0)  # min-norm solution still fits the data


def test_e0_absent_element_is_zero_and_no_labels_is_an_error():
    e0s = fit_e0s([_structure("H", -1.0), _structure("H2", -2.0)], z_table_from(["H", "O"]))
    np.testing.assert_allclose(e0s, [-1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="no labeled structures"):
        fit_e0s([], z_table_from(["H"]))


def test_set_trainable_by_patterns():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    names = set_trainable(net, ["1.*"])
    assert names == ["1.weight", "1.bias"]
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
    assert len(set_trainable(net, None)) == 4 and all(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="'readouts.\\*' matches no parameter"):
        set_trainable(net, ["readouts.*"])


def test_load_foundation_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        load_foundation(tmp_path / "absent.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not loadable"):
        load_foundation(junk)
    other = tmp_path / "linear.model"
    torch.save(torch.nn.Linear(2, 2), other)
    with pytest.raises(ValueError, match="not a MACE model"):
        load_foundation(other)


def test_z_table_from_symbols_and_numbers():
    assert z_table_from(["O", 1, "Cu", "H"]).zs == [1, 8, 29]
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        z_table_from(["Xx"])
