"""The embedded foundation dataset: kinds, no adsorbate-on-slab frames, labels, determinism, splits."""

import filecmp

import numpy as np
import pytest
from ase.calculators.emt import EMT

from al_lightning import keys as K
from al_lightning.data.foundation import KINDS, FoundationSpec, ensure_foundation_dataset, system_frames
from al_lightning.data.io import read_structures
from al_lightning.data.synthetic import METALS

SPEC = FoundationSpec(seed=5, sizes={"train": 60, "val": 20})
GAS = {"H", "C", "N", "O"}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    paths = ensure_foundation_dataset(SPEC, workers=2, root=tmp_path_factory.mktemp("cache"))
    return paths, {s: read_structures(p) for s, p in paths.items()}


def test_sizes_kinds_and_no_adsorbate_on_slab(frames):
    _, splits = frames
    assert {s: len(f) for s, f in splits.items()} == {"train": 60, "val": 20}
    assert {a.info["kind"] for a in splits["train"]} == set(KINDS)
    for a in splits["train"] + splits["val"]:
        symbols, kind = set(a.get_chemical_symbols()), a.info["kind"]
        # all metal, all gas-phase elements, or a bulk metal-nonmetal crystal (periodic in 3D, no
        # vacuum): never an adsorbate on a slab
        assert symbols <= set(METALS) or symbols <= GAS or kind == "compound", (kind, symbols)
        assert (symbols <= GAS) == (kind == "molecule")
        if kind == "compound":
            assert symbols <= set(METALS) | GAS and symbols & set(METALS) and len(symbols & GAS) <= 1, symbols
        assert a.pbc.all() == (kind in ("bulk", "alloy", "surface", "compound"))
        assert np.linalg.norm(a.arrays[K.REF_FORCES], axis=1).max() <= SPEC.max_force
    compounds = [a for a in splits["train"] if a.info["kind"] == "compound"]
    assert any(set(a.get_chemical_symbols()) & GAS for a in compounds)  # metal-nonmetal bonds are there


def test_labels_are_raw_emt(frames):
    """EMT on the stored positions reproduces the stored labels (positions are stored with 8
    decimals in extxyz, so agreement is to ~1e-7, not to machine precision)."""
    _, splits = frames
    for a in splits["train"][::7]:
        ref = a.copy()
        ref.calc = EMT()
        assert ref.get_potential_energy() == pytest.approx(a.info[K.REF_ENERGY], rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(ref.get_forces(apply_constraint=False), a.arrays[K.REF_FORCES], atol=1e-5)


def test_splits_hold_disjoint_systems(frames):
    _, splits = frames
    firsts = {s: {tuple(np.round(system_frames(s, i, SPEC)[0].positions[0], 6))
                  for i in sorted({a.info[K.SYSTEM_ID] for a in f})} for s, f in splits.items()}
    assert not firsts["train"] & firsts["val"]


def test_deterministic_for_any_worker_count(frames, tmp_path):
    paths, _ = frames
    again = ensure_foundation_dataset(SPEC, workers=1, root=tmp_path)
    assert all(filecmp.cmp(paths[s], again[s], shallow=False) for s in paths)
    assert SPEC.key() != FoundationSpec(seed=6, sizes=dict(SPEC.sizes)).key()


@pytest.mark.parametrize("bad, message", [({"sizes": {"pool": 3}}, "unknown split"),
                                          ({"sizes": {"train": 0}}, "train >= 1"),
                                          ({"rattle_frames": 0, "md_frames": 0}, "not both 0")])
def test_bad_spec_is_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        FoundationSpec(**bad)
