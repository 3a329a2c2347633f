"""Readers: indexed random access in every ASE format, raw forces, one-line errors."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import read, write

from al_lightning import keys as K
from al_lightning.data.io import DataError, StructureFile, read_structures


def _frames(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = fcc111("Cu", (2, 2, 2), vacuum=4.0)
        a.rattle(0.05, seed=i)
        a.set_constraint(FixAtoms(indices=[0, 1]))
        a.info["my_e"] = float(rng.normal())
        a.arrays["my_f"] = rng.normal(size=(len(a), 3))
        out.append(a)
    return out


def test_extxyz_random_access_matches_ase(tmp_path):
    frames = _frames(5)
    path = tmp_path / "x.extxyz"
    write(path, frames)
    f = StructureFile(path, energy_key="my_e", forces_key="my_f")
    assert len(f) == 5
    for i in (3, 0, 4):  # any order: reads record i only
        a = f[i]
        np.testing.assert_allclose(a.positions, frames[i].positions, atol=1e-7)
        assert a.info[K.REF_ENERGY] == pytest.approx(frames[i].info["my_e"])
        np.testing.assert_allclose(a.arrays[K.REF_FORCES], frames[i].arrays["my_f"], atol=1e-7)  # fixed atoms keep forces
        assert isinstance(a.constraints[0], FixAtoms)


def test_offsets_are_cached(tmp_path, monkeypatch):
    path = tmp_path / "x.extxyz"
    write(path, _frames(3))
    StructureFile(path, energy_key="my_e", forces_key="my_f")
    import al_lightning.data.io as io

    monkeypatch.setattr(io, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rescanned")), raising=False)
    assert len(io.extxyz_offsets(path)) == 3


@pytest.mark.parametrize("fmt", ["db", "traj"])
def test_other_formats_with_calculator_labels(tmp_path, fmt):
    frames = _frames(3)
    for a in frames:
        raw = a.arrays["my_f"].copy()
        a.calc = SinglePointCalculator(a, energy=a.info["my_e"], forces=raw)
    path = tmp_path / f"x.{fmt}"
    write(path, frames)
    f = StructureFile(path, energy_key="energy", forces_key="forces")
    assert len(f) == 3
    a = f[2]
    assert a.info[K.REF_ENERGY] == pytest.approx(frames[2].info["my_e"])
    # raw forces: not zeroed on the fixed atoms 0 and 1
    np.testing.assert_allclose(a.arrays[K.REF_FORCES], frames[2].arrays["my_f"], atol=1e-12)


def _write_text(path, text):
    path.write_text(text)
    return path


GOOD = _frames(2)


def _bad_cases(tmp_path):
    ok = tmp_path / "ok.extxyz"
    write(ok, GOOD)
    text = ok.read_text().splitlines()
    n = len(GOOD[0])
    cases = {
        "empty": (_write_text(tmp_path / "empty.extxyz", ""), "no structures"),
        "truncated": (_write_text(tmp_path / "trunc.extxyz", "\n".join(text[: n + 2 + 3]) + "\n"), "record 1: truncated"),
        "bad count": (_write_text(tmp_path / "count.extxyz", "abc\n" + "\n".join(text[1:]) + "\n"), "record 0: expected an atom count"),
    }
    a = GOOD[0].copy()
    del a.info["my_e"]
    write(tmp_path / "noe.extxyz", [GOOD[1], a])
    cases["missing energy"] = (tmp_path / "noe.extxyz", "record 1: no energy label under key 'my_e'")
    b = GOOD[0].copy()
    del b.arrays["my_f"]
    write(tmp_path / "nof.extxyz", [b])
    cases["missing forces"] = (tmp_path / "nof.extxyz", "record 0: no forces under key 'my_f'")
    c = GOOD[0].copy()
    c.info["my_e"] = float("nan")
    write(tmp_path / "nan.extxyz", [c])
    cases["nan energy"] = (tmp_path / "nan.extxyz", "record 0: energy 'my_e' is nan")
    d = GOOD[0].copy()
    d.arrays["my_f"] = d.arrays["my_f"].copy()
    d.arrays["my_f"][3, 1] = np.inf
    write(tmp_path / "inf.extxyz", [d])
    cases["inf forces"] = (tmp_path / "inf.extxyz", "record 0: forces 'my_f' contain NaN/inf")
    e = GOOD[0].copy()
    del e.arrays["my_f"]
    e.arrays["my_f"] = np.zeros((len(e), 2))
    write(tmp_path / "shape.extxyz", [e])
    cases["force shape"] = (tmp_path / "shape.extxyz", f"record 0: forces 'my_f' have shape ({n}, 2), expected ({n}, 3)")
    cases["not found"] = (tmp_path / "absent.extxyz", "file not found")
    return cases


def test_each_malformed_input_gives_one_clear_line(tmp_path):
    for name, (path, expected) in _bad_cases(tmp_path).items():
        with pytest.raises(DataError) as info:
            read_structures(path, energy_key="my_e", forces_key="my_f")
        msg = str(info.value)
        assert expected in msg, (name, msg)
        assert str(path) in msg and "\n" not in msg, (name, msg)


def test_unknown_elements(tmp_path):
    path = tmp_path / "x.extxyz"
    write(path, _frames(1))
    with pytest.raises(DataError, match=r"record 0: unknown element\(s\) Z=\[29\]"):
        read_structures(path, energy_key="my_e", forces_key="my_f", elements=[1, 8])


def test_pool_file_without_labels_is_readable(tmp_path):
    path = tmp_path / "pool.extxyz"
    write(path, [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]], cell=[5, 5, 5], pbc=True)])
    f = StructureFile(path, require_labels=False)
    assert K.REF_ENERGY not in f[0].info
    with pytest.raises(DataError, match="no energy label"):
        StructureFile(path)[0]


def test_roundtrip_read_matches_ase_read(tiny_paths):
    path = tiny_paths["val"]
    ours = read_structures(path)
    theirs = read(path, ":")
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.arrays[K.REF_FORCES], b.arrays[K.REF_FORCES])


def test_a_file_cut_inside_its_last_number_is_refused(tmp_path, tiny_paths):
    """A pool truncated while being written (``3.07093050`` → ``3.07``, no final newline) or with a
    short atom line is refused naming the file and the record, not read silently."""
    from al_lightning.data.io import DataError, StructureFile

    text = Path(tiny_paths["pool"]).read_text()
    cut = tmp_path / "cut.extxyz"
    cut.write_text(text.rstrip("\n")[:-5])
    n = len(StructureFile(tiny_paths["pool"]))
    with pytest.raises(DataError, match=rf"cut.extxyz: record {n - 1}: truncated \(its last line has no end"):
        StructureFile(cut)
    lines = text.splitlines(keepends=True)
    lines[3] = " ".join(lines[3].split()[:-2]) + "\n"  # record 0, second atom line: two columns short
    short = tmp_path / "short.extxyz"
    short.write_text("".join(lines))
    with pytest.raises(DataError, match=r"short.extxyz: record 0: atom line 2 has \d+ columns, the record's first"):
        StructureFile(short)
