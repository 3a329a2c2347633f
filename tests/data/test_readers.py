"""Readers for OC20 S2EF chunks, Transition1x and RGD1 HDF5, on tiny fixtures written here."""

from __future__ import annotations

import io
import lzma
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import write
from ase.units import Hartree

from al_lightning import keys as K
from al_lightning.data import oc20 as oc20_mod
from al_lightning.data.hdf5 import T1X_ENERGY, T1X_FORCES, RGD1File, T1xFile
from al_lightning.data.io import DataError, StructureFile, write_extxyz
from al_lightning.data.oc20 import OC20S2EF
from al_lightning.data.readers import has_forces, open_structures


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own dataset cache (decompressed chunks, offset indexes)."""
    monkeypatch.setenv("AL_LIGHTNING_CACHE", str(tmp_path / "cache"))


def assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, (part, msg)


# ---------------------------------------------------------------- OC20 S2EF fixtures
def s2ef_frame(seed: int, metal: str = "Cu") -> Atoms:
    """OC20-like adslab: tags 0 subsurface / 1 surface / 2 adsorbate, bottom layers fixed."""
    rng = np.random.default_rng(seed)
    slab = fcc111(metal, (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    ase_tags = slab.get_tags()  # ase: 1 top layer ... 3 bottom, 0 adsorbate
    slab.set_tags(np.where(ase_tags == 0, 2, np.where(ase_tags == 1, 1, 0)))
    slab.set_constraint(FixAtoms(indices=np.flatnonzero(ase_tags >= 2)))
    slab.pbc = True
    slab.info.clear()
    slab.positions += rng.normal(scale=0.02, size=slab.positions.shape)
    forces = rng.normal(size=(len(slab), 3))  # nonzero on fixed atoms too: must survive
    slab.calc = SinglePointCalculator(slab, energy=-10.0 - seed, free_energy=-10.0 - seed, forces=forces)
    return slab


def write_xz(path: Path, text: str) -> None:
    with lzma.open(path, "wt") as fh:
        fh.write(text)


def extxyz_text(frames: Sequence[Atoms]) -> str:
    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    return buf.getvalue()


def write_chunk(folder: Path, n: int, frames: Sequence[Atoms], lines: Sequence[str]) -> None:
    """``n.extxyz.xz`` + ``n.txt.xz`` as in the S2EF release."""
    folder.mkdir(parents=True, exist_ok=True)
    write_xz(folder / f"{n}.extxyz.xz", extxyz_text(frames))
    write_xz(folder / f"{n}.txt.xz", "".join(f"{line}\n" for line in lines))


def meta_line(sid: int, fid: int, ref: "float | None") -> str:
    return f"random{sid},frame{fid}" + ("" if ref is None else f",{ref!r}")


@pytest.fixture
def s2ef_split(tmp_path) -> Tuple[Path, List[Atoms], List[Tuple[int, int, float]]]:
    """Chunks 0, 2, 10 (numeric order differs from name order) with 2, 1, 3 frames."""
    folder = tmp_path / "s2ef_val"
    frames, meta, seed = [], [], 0
    for n, count in ((10, 3), (0, 2), (2, 1)):
        chunk = [s2ef_frame(seed + k) for k in range(count)]
        rows = [(1000 + seed + k, 7 * (seed + k), -1.25 * (seed + k)) for k in range(count)]
        write_chunk(folder, n, chunk, [meta_line(*r) for r in rows])
        frames.append((n, chunk))
        meta.append((n, rows))
        seed += count
    order = sorted(range(3), key=lambda k: frames[k][0])
    return folder, [a for k in order for a in frames[k][1]], [r for k in order for r in meta[k][1]]


# ---------------------------------------------------------------- OC20 S2EF tests
def test_oc20_global_ids_labels_tags_constraints(s2ef_split):
    folder, frames, meta = s2ef_split
    f = OC20S2EF(folder)
    assert [c.name for c in f.chunks] == ["0.extxyz.xz", "2.extxyz.xz", "10.extxyz.xz"]
    assert len(f) == len(frames) == 6 and has_forces(f)
    for i, (ref_atoms, (sid, fid, ref)) in enumerate(zip(frames, meta)):
        a = f[i]
        assert (a.info["oc20_sid"], a.info["oc20_fid"]) == (sid, fid)
        assert a.info["ref_energy"] == pytest.approx(ref)
        assert a.info[K.REF_ENERGY] == pytest.approx(ref_atoms.calc.results["energy"])
        np.testing.assert_allclose(a.arrays[K.REF_FORCES], ref_atoms.calc.results["forces"], atol=1e-7)
        fixed = ref_atoms.constraints[0].get_indices()
        assert np.abs(a.arrays[K.REF_FORCES][fixed]).sum() > 0  # raw forces on fixed atoms kept
        np.testing.assert_array_equal(a.get_tags(), ref_atoms.get_tags())
        assert sorted(set(a.get_tags())) == [0, 1, 2]
        assert isinstance(a.constraints[0], FixAtoms)
        np.testing.assert_array_equal(a.constraints[0].get_indices(), fixed)
        np.testing.assert_allclose(a.positions, ref_atoms.positions, atol=1e-6)
        assert a.pbc.all() and a.calc is None


def test_oc20_random_access_order_independent(s2ef_split):
    folder, _, _ = s2ef_split
    f = OC20S2EF(folder)
    seq = [f[i] for i in range(len(f))]
    for i in np.random.default_rng(0).permutation(len(f)):
        a = f[int(i)]
        assert a.info["oc20_sid"] == seq[i].info["oc20_sid"]
        np.testing.assert_array_equal(a.positions, seq[i].positions)
    assert [a.info["oc20_sid"] for a in f] == [a.info["oc20_sid"] for a in seq]
    with pytest.raises(IndexError):
        f.raw(len(f))


def test_oc20_single_file_list_and_sid_fid_only(tmp_path):
    write_chunk(tmp_path / "a", 0, [s2ef_frame(0)], ["random5,frame1"])
    write_chunk(tmp_path / "b", 3, [s2ef_frame(1), s2ef_frame(2)], [meta_line(6, 2, -3.0), meta_line(7, 3, -4.0)])
    single = open_structures(tmp_path / "a" / "0.extxyz.xz")
    assert isinstance(single, OC20S2EF) and len(single) == 1
    assert "ref_energy" not in single[0].info and single[0].info["oc20_sid"] == 5
    both = open_structures([tmp_path / "b", tmp_path / "a" / "0.extxyz.xz"])
    assert [a.info["oc20_sid"] for a in both] == [5, 6, 7]  # chunks in numeric order


def test_oc20_decompresses_once(s2ef_split, monkeypatch, tmp_path):
    folder, _, meta = s2ef_split
    first = [a.info[K.REF_ENERGY] for a in OC20S2EF(folder)]
    cached = sorted(p.name for p in (tmp_path / "cache" / "oc20").glob("*/*") if not p.name.endswith(".lock"))
    assert cached == sorted(["0.extxyz", "2.extxyz", "10.extxyz", "0.txt.npz", "2.txt.npz", "10.txt.npz"])
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "oc20").glob("*/*")}

    def no_lzma(*args, **kwargs):
        raise AssertionError("decompressed twice")

    monkeypatch.setattr(oc20_mod.lzma, "open", no_lzma)
    again = OC20S2EF(folder)
    assert [a.info[K.REF_ENERGY] for a in again] == first
    assert [a.info["oc20_sid"] for a in again] == [m[0] for m in meta]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert not list((tmp_path / "cache" / "oc20").glob("*/.*tmp*"))  # no temp files left


def test_oc20_cache_follows_source_changes(tmp_path):
    write_chunk(tmp_path / "s", 0, [s2ef_frame(0)], [meta_line(1, 0, -1.0)])
    assert OC20S2EF(tmp_path / "s")[0].info["oc20_sid"] == 1
    write_chunk(tmp_path / "s", 0, [s2ef_frame(0), s2ef_frame(1)], [meta_line(2, 0, -1.0), meta_line(3, 0, -2.0)])
    os.utime(tmp_path / "s" / "0.txt.xz", ns=(1, 1))  # a different mtime, whatever the clock
    os.utime(tmp_path / "s" / "0.extxyz.xz", ns=(1, 1))
    assert [a.info["oc20_sid"] for a in OC20S2EF(tmp_path / "s")] == [2, 3]


def test_oc20_line_count_mismatch(tmp_path):
    write_chunk(tmp_path, 4, [s2ef_frame(0), s2ef_frame(1)], [meta_line(1, 0, -1.0)])
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, "4.txt.xz", "1 lines", "2 frames")


def test_oc20_malformed_txt_line(tmp_path):
    write_chunk(tmp_path, 0, [s2ef_frame(0), s2ef_frame(1)], [meta_line(1, 0, -1.0), "random2;frame0;-1.0"])
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, "0.txt.xz", "line 2", "random2;frame0")
    write_chunk(tmp_path, 0, [s2ef_frame(0)], ["random1,frame0,abc"])
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, "0.txt.xz", "line 1")


def test_oc20_missing_txt_and_empty_folder(tmp_path):
    write_chunk(tmp_path, 0, [s2ef_frame(0)], [meta_line(1, 0, -1.0)])
    (tmp_path / "0.txt.xz").unlink()
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, "0.extxyz.xz", "0.txt.xz", "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path / "empty")
    assert_one_line(exc, "empty", "no '*.extxyz.xz'")


@pytest.mark.parametrize("which", ["extxyz", "txt"])
def test_oc20_corrupt_xz(tmp_path, which):
    write_chunk(tmp_path, 1, [s2ef_frame(0)], [meta_line(1, 0, -1.0)])
    target = tmp_path / f"1.{which}.xz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, str(target), "corrupt .xz")
    target.write_bytes(b"not an xz file at all")
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, str(target), "corrupt .xz")


def test_oc20_truncated_frame_names_source_and_record(tmp_path):
    text = extxyz_text([s2ef_frame(0), s2ef_frame(1)])
    write_chunk(tmp_path, 0, [s2ef_frame(0)], [meta_line(1, 0, -1.0), meta_line(2, 0, -1.0)])
    write_xz(tmp_path / "0.extxyz.xz", "\n".join(text.splitlines()[:-3]) + "\n")
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)
    assert_one_line(exc, str(tmp_path / "0.extxyz.xz"), "record 1", "truncated")
    assert "cache" not in str(exc.value)


def test_oc20_unlabelled_frames(tmp_path):
    a = s2ef_frame(0)
    a.calc = None
    write_chunk(tmp_path, 0, [a], ["random1,frame0"])
    assert K.REF_ENERGY not in OC20S2EF(tmp_path, require_labels=False)[0].info
    with pytest.raises(DataError) as exc:
        OC20S2EF(tmp_path)[0]
    assert_one_line(exc, "0.extxyz.xz", "record 0", "no energy")


# ---------------------------------------------------------------- Transition1x
T1X_LAYOUT = {"CH2O": {"rxn0010": 3, "rxn0002": 2}, "C2H2": {"rxn0005": 4}}  # formula -> rxn -> M
T1X_NUMBERS = {"CH2O": [6, 1, 1, 8], "C2H2": [6, 6, 1, 1]}


def t1x_arrays(formula: str, rxn: str, m: int) -> Dict[str, np.ndarray]:
    """Deterministic per-reaction arrays; frame k's energy encodes (rxn, k) for order checks."""
    n = len(T1X_NUMBERS[formula])
    rng = np.random.default_rng(int(rxn[3:]))
    return {"atomic_numbers": np.asarray(T1X_NUMBERS[formula], dtype=np.int64),
            "positions": rng.normal(size=(m, n, 3)),
            T1X_ENERGY: -1000.0 * int(rxn[3:]) - np.arange(m, dtype=float),
            T1X_FORCES: rng.normal(size=(m, n, 3))}


def write_t1x_group(grp: h5py.Group, arrays: Dict[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        grp.create_dataset(name, data=value)


def write_t1x(path: Path, layout=T1X_LAYOUT, splits=("data", "train", "val", "test")) -> Path:
    """Transition1x layout: /{split}/{formula}/{rxn}/ + reactant/product/transition_state."""
    with h5py.File(path, "w") as f:
        for split in splits:
            for formula, rxns in layout.items():
                for rxn, m in rxns.items():
                    arrays = t1x_arrays(formula, rxn, m)
                    grp = f.create_group(f"{split}/{formula}/{rxn}")
                    write_t1x_group(grp, arrays)
                    for k, sub in enumerate(("reactant", "product", "transition_state")):
                        one = {name: (v if name == "atomic_numbers" else v[[[0, -1, m // 2][k]]])
                               for name, v in arrays.items()}
                        write_t1x_group(grp.create_group(sub), one)
    return path


def test_t1x_index_order_and_values(tmp_path):
    f = open_structures(write_t1x(tmp_path / "t1x.h5"), fmt="t1x", split="train")
    assert isinstance(f, T1xFile) and len(f) == 9 and has_forces(f)
    expected = [(fo, rx, k) for fo in sorted(T1X_LAYOUT) for rx in sorted(T1X_LAYOUT[fo])
                for k in range(T1X_LAYOUT[fo][rx])]
    got = [(a.info["formula"], a.info["rxn"], a.info["frame"]) for a in f]
    assert got == expected
    for i in (8, 0, 4, 2):  # random access, any order
        formula, rxn, k = expected[i]
        arrays, a = t1x_arrays(formula, rxn, T1X_LAYOUT[formula][rxn]), f[i]
        np.testing.assert_array_equal(a.numbers, arrays["atomic_numbers"])
        np.testing.assert_array_equal(a.positions, arrays["positions"][k])
        assert a.info[K.REF_ENERGY] == arrays[T1X_ENERGY][k]
        np.testing.assert_array_equal(a.arrays[K.REF_FORCES], arrays[T1X_FORCES][k])
        assert not a.pbc.any() and not a.cell.any() and a.info["t1x_group"] == "path"


def test_t1x_endpoints_and_splits(tmp_path):
    path = write_t1x(tmp_path / "t1x.h5")
    f = T1xFile(path, split="val", include_endpoints=True)
    assert len(f) == 9 + 3 * 3
    groups = [(a.info["rxn"], a.info["t1x_group"]) for a in f][:7]
    assert groups == [("rxn0005", g) for g in ["path"] * 4 + ["reactant", "product", "transition_state"]]
    ts = f[6]
    assert ts.info[K.REF_ENERGY] == t1x_arrays("C2H2", "rxn0005", 4)[T1X_ENERGY][2]
    assert len(T1xFile(path, split="data")) == 9


def _t1x_with(tmp_path, edit) -> Path:
    path = write_t1x(tmp_path / "bad.h5", splits=("train",))
    with h5py.File(path, "a") as f:
        edit(f)
    return path


@pytest.mark.parametrize("edit, parts", [
    (lambda f: f.__delitem__(f"train/CH2O/rxn0010/{T1X_FORCES}"), ["/train/CH2O/rxn0010", "missing", T1X_FORCES]),
    (lambda f: f.__delitem__("train/C2H2/rxn0005/positions"), ["/train/C2H2/rxn0005", "missing", "positions"]),
    (lambda f: (f.__delitem__(f"train/CH2O/rxn0002/{T1X_ENERGY}"),
                f.create_dataset(f"train/CH2O/rxn0002/{T1X_ENERGY}", data=np.zeros(5))),
     ["/train/CH2O/rxn0002", T1X_ENERGY, "(5,)", "expected (2,)"]),
    (lambda f: (f.__delitem__("train/CH2O/rxn0002/positions"),
                f.create_dataset("train/CH2O/rxn0002/positions", data=np.zeros((2, 3, 3)))),
     ["/train/CH2O/rxn0002", "positions", "expected (M, 4, 3)"]),
    (lambda f: f["train/CH2O"].__setitem__("rxn0001", h5py.SoftLink("/nowhere")),
     ["/train/CH2O/rxn0001", "unreadable group"]),
    (lambda f: f["train/CH2O"].__setitem__("rxn0003", h5py.ExternalLink("missing.h5", "/x")),
     ["/train/CH2O/rxn0003", "unreadable group"]),
])
def test_t1x_malformed(tmp_path, edit, parts):
    path = _t1x_with(tmp_path, edit)
    with pytest.raises(DataError) as exc:
        T1xFile(path, split="train")
    assert_one_line(exc, str(path), *parts)


def test_t1x_missing_split_and_file(tmp_path):
    path = write_t1x(tmp_path / "t1x.h5", splits=("data",))
    with pytest.raises(DataError) as exc:
        T1xFile(path, split="test")
    assert_one_line(exc, str(path), "'/test'", "['data']")
    with pytest.raises(DataError) as exc:
        T1xFile(tmp_path / "nope.h5")
    assert_one_line(exc, "nope.h5", "not found")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(DataError) as exc:
        T1xFile(tmp_path / "junk.h5")
    assert_one_line(exc, "junk.h5", "unreadable HDF5")


def test_t1x_pickles_for_workers(tmp_path):
    import pickle

    f = T1xFile(write_t1x(tmp_path / "t1x.h5"), split="test")
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g[3].positions, f[3].positions)


# ---------------------------------------------------------------- RGD1
RGD1_RXNS = {"MR_2_0": [6, 8, 1, 1], "MR_10_1": [6, 1, 1, 1, 1], "MR_10_0": [7, 1, 1, 1]}


def rgd1_values(rxn: str) -> Dict[str, object]:
    n, seed = len(RGD1_RXNS[rxn]), sum(map(ord, rxn))
    rng = np.random.default_rng(seed)
    out: Dict[str, object] = {g: rng.normal(size=(n, 3)) for g in ("RG", "PG", "TSG")}
    for k, kind in enumerate(("R", "P", "TS")):
        for j, col in enumerate("EHF"):
            out[f"{kind}_{col}"] = -100.0 - seed / 100 - k / 10 - j / 1000  # Hartree
    return out


def write_rgd1(path: Path, rxns=RGD1_RXNS) -> Path:
    """RGD1_CHNO.h5 layout: one group per reaction, scalar energies in Hartree."""
    with h5py.File(path, "w") as f:
        for rxn, numbers in rxns.items():
            grp = f.create_group(rxn)
            grp.create_dataset("elements", data=np.asarray(numbers, dtype=np.int64))
            for name, value in rgd1_values(rxn).items():
                grp.create_dataset(name, data=value)
            grp.create_dataset("Rsmiles", data=f"R{rxn}".encode())
            grp.create_dataset("Psmiles", data=f"P{rxn}".encode())
    return path


def test_rgd1_frames_hartree_to_ev_no_forces(tmp_path):
    f = open_structures(write_rgd1(tmp_path / "RGD1_CHNO.h5"), fmt="rgd1")
    assert isinstance(f, RGD1File) and not f.has_forces and not has_forces(f)
    assert len(f) == 9
    rxns = sorted(RGD1_RXNS)
    assert [(a.info["rxn"], a.info["rgd1_kind"]) for a in f] == [(r, k) for r in rxns for k in ("R", "P", "TS")]
    for i in (7, 0, 5):
        rxn, kind = rxns[i // 3], ("R", "P", "TS")[i % 3]
        values, a = rgd1_values(rxn), f[i]
        assert a.info[K.REF_ENERGY] == pytest.approx(values[f"{kind}_E"] * Hartree, rel=1e-12)
        assert abs(a.info[K.REF_ENERGY]) > 2700  # eV, not Hartree
        np.testing.assert_array_equal(a.positions, values[{"R": "RG", "P": "PG", "TS": "TSG"}[kind]])
        np.testing.assert_array_equal(a.numbers, RGD1_RXNS[rxn])
        assert K.REF_FORCES not in a.arrays and not a.pbc.any()
    assert f[2].info["smiles"] == f"R{rxns[0]}>>P{rxns[0]}" and f[1].info["smiles"] == f"P{rxns[0]}"


def test_rgd1_kinds_and_enthalpy(tmp_path):
    f = RGD1File(write_rgd1(tmp_path / "r.h5"), energy_key="H", kinds=("TS",))
    assert len(f) == 3 and all(a.info["rgd1_kind"] == "TS" for a in f)
    assert f[0].info[K.REF_ENERGY] == pytest.approx(rgd1_values("MR_10_0")["TS_H"] * Hartree)
    with pytest.raises(DataError):
        RGD1File(tmp_path / "r.h5", kinds=("IRC",))
    with pytest.raises(DataError) as exc:
        open_structures(tmp_path / "r.h5", fmt="rgd1", forces_key="forces")
    assert_one_line(exc, "r.h5", "no forces")


def test_rgd1_malformed(tmp_path):
    path = write_rgd1(tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        del f["MR_2_0/TSG"]
        del f["MR_10_1/P_E"]
        del f["MR_10_0/RG"]
        f["MR_10_0/RG"] = np.zeros((3, 3))
    f = RGD1File(path)
    with pytest.raises(DataError) as exc:
        f[8]
    assert_one_line(exc, str(path), "/MR_2_0: TS", "missing", "TSG")
    with pytest.raises(DataError) as exc:
        f[4]
    assert_one_line(exc, "/MR_10_1: P", "P_E")
    assert K.REF_ENERGY not in RGD1File(path, require_labels=False)[4].info
    with pytest.raises(DataError) as exc:
        f[0]
    assert_one_line(exc, "/MR_10_0: R", "RG", "(3, 3)", "expected (4, 3)")


# ---------------------------------------------------------------- dispatcher
def test_open_structures_dispatch(tmp_path, s2ef_split):
    folder, _, _ = s2ef_split
    assert isinstance(open_structures(folder), OC20S2EF)
    assert isinstance(open_structures(folder / "2.extxyz.xz"), OC20S2EF)
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    a.info[K.REF_ENERGY] = -1.0
    a.arrays[K.REF_FORCES] = np.zeros((2, 3))
    write_extxyz(tmp_path / "x.extxyz", [a])
    plain = open_structures(tmp_path / "x.extxyz")
    assert isinstance(plain, StructureFile) and has_forces(plain) and plain[0].info[K.REF_ENERGY] == -1.0
    write_t1x(tmp_path / "t1x.hdf5", splits=("train",))
    with pytest.raises(DataError) as exc:
        open_structures(tmp_path / "t1x.hdf5")
    assert_one_line(exc, "t1x.hdf5", "fmt='t1x'", "fmt='rgd1'")
    with pytest.raises(DataError) as exc:
        open_structures(tmp_path / "x.extxyz", fmt="lmdb")
    assert_one_line(exc, "x.extxyz", "unknown format")
    with pytest.raises(DataError):
        open_structures(tmp_path / "x.extxyz", split="train")


@pytest.mark.parametrize("make, kwargs", [("t1x", {"split": "val", "include_endpoints": True}), ("t1x", {"split": "train"}),
                                          ("rgd1", {})])
def test_hdf5_atom_counts_from_metadata_equal_reading_every_frame(tmp_path, make, kwargs):
    from al_lightning.data.source import StructureSource

    f = (T1xFile(write_t1x(tmp_path / "t.h5"), **kwargs) if make == "t1x" else RGD1File(write_rgd1(tmp_path / "r.h5")))
    counts = f.atom_counts()
    assert counts.dtype == np.int64 and len(counts) == len(f)
    np.testing.assert_array_equal(counts, StructureSource.atom_counts(f))  # the base class reads every frame


def test_oc20_atom_counts_from_the_index_equal_reading_every_frame(s2ef_split):
    from al_lightning.data.source import StructureSource

    folder, frames, _ = s2ef_split
    f = OC20S2EF(folder)
    np.testing.assert_array_equal(f.atom_counts(), [len(a) for a in frames])
    np.testing.assert_array_equal(f.atom_counts(), StructureSource.atom_counts(f))
