"""The embedded EMT catalysis dataset: composition of splits, tags, constraints, sources, determinism."""

import filecmp

import numpy as np
import pytest
from ase.constraints import FixAtoms
from ase.data import chemical_symbols

from al_lightning import keys as K
from al_lightning.data.io import free_mask, read_structures
from al_lightning.data.synthetic import (ID_ADSORBATES, OOD_ADSORBATES, SPLITS, EMTCatalysisSpec, build_system,
                                         generate, split_choices, system_frames)


@pytest.fixture(scope="module")
def splits(tiny_paths):
    return {s: read_structures(p) for s, p in tiny_paths.items()}


def _elements(frames):
    return {z for a in frames for z in a.numbers.tolist()}


def test_sizes_and_ids(splits, tiny_spec):
    assert set(splits) == {s for s in SPLITS if tiny_spec.sizes.get(s, 0) > 0}
    for split in splits:
        assert len(splits[split]) == tiny_spec.sizes[split]
        assert [a.info["id"] for a in splits[split]] == list(range(len(splits[split])))


def test_ood_splits_hold_unseen_combinations_of_seen_elements(splits):
    seen_ads = {a.info[K.ADSORBATE] for s in ("pool", "initial") for a in splits[s]}
    seen_cats = {a.info[K.CATALYST] for s in ("pool", "initial") for a in splits[s]}
    seen_elements = _elements(splits["pool"]) | _elements(splits["initial"])
    for split in ("test_ood_ads", "test_ood_both"):
        ads = {a.info[K.ADSORBATE] for a in splits[split]}
        assert ads and ads.isdisjoint(seen_ads) and ads <= set(OOD_ADSORBATES)
    for split in ("test_ood_cat", "test_ood_both"):
        cats = {a.info[K.CATALYST] for a in splits[split]}
        assert cats and cats.isdisjoint(seen_cats)
    for split in ("test_ood_ads", "test_ood_cat", "test_ood_both"):
        missing = _elements(splits[split]) - seen_elements
        assert not missing, f"{split} has elements absent from pool/initial: {[chemical_symbols[z] for z in missing]}"
    assert {a.info[K.ADSORBATE] for a in splits["test_id"]} <= set(ID_ADSORBATES)


def test_ood_catalyst_choices_are_metals_of_the_pool():
    id_cats, _ = split_choices("pool")
    ood_cats, _ = split_choices("test_ood_cat")
    assert set(id_cats).isdisjoint(ood_cats)
    id_metals = {c.split("(")[0] for c in id_cats}
    for cat in ood_cats:
        name = cat.split("(")[0]
        parts = [name[:2], name[2:]] if len(name) > 2 else [name]
        assert set(parts) <= id_metals


def test_held_out_metals_appear_only_in_test_ood_metal():
    held = ("Au", "Ni", "Pd")
    spec = EMTCatalysisSpec(held_out_metals=held, sizes={"pool": 10, "test_ood_metal": 5})
    held_z = {chemical_symbols.index(m) for m in held}
    seen = {}
    for split in ("pool", "initial", "test_id", "test_ood_ads", "test_ood_cat", "test_ood_both", "test_ood_metal"):
        zs = {z for i in range(12) for z in build_system(split, i, spec).numbers.tolist()}
        seen[split] = zs & held_z
    assert seen.pop("test_ood_metal") == held_z  # every held-out metal, and only there
    assert not any(seen.values()), seen
    assert EMTCatalysisSpec().key() != spec.key()
    for kwargs, match in [({"held_out_metals": ("Xx",), "sizes": {"test_ood_metal": 5}}, "some \\(not all\\) of"),
                          ({"held_out_metals": held}, "go together"), ({"sizes": {"test_ood_metal": 5}}, "go together")]:
        with pytest.raises(ValueError, match=match) as info:
            EMTCatalysisSpec(**kwargs)
        assert "\n" not in str(info.value)


def test_tags_constraints_sources_and_force_cap(splits, tiny_spec):
    sources = set()
    for split, frames in splits.items():
        for atoms in frames:
            tags = atoms.get_tags()
            assert set(tags.tolist()) == {0, 1, 2}, split
            n_ads = (tags == 2).sum()
            assert 1 <= n_ads <= 3
            fixed = [c for c in atoms.constraints if isinstance(c, FixAtoms)]
            assert fixed and len(fixed[0].get_indices()) > 0
            free = free_mask(atoms)
            assert free[tags == 2].all() and free[tags == 1].all()
            fmax = np.linalg.norm(atoms.arrays[K.REF_FORCES][free], axis=1).max()
            assert fmax <= tiny_spec.max_force
            sources.add(atoms.info[K.SOURCE])
    assert sources == {"relax", "md", "rattle"}


def test_forces_are_raw_emt_forces_on_fixed_atoms(splits):
    from ase.calculators.emt import EMT

    atoms = splits["pool"][5].copy()
    ref = atoms.arrays[K.REF_FORCES]
    atoms.calc = EMT()
    raw = atoms.get_forces(apply_constraint=False)
    np.testing.assert_allclose(ref, raw, atol=1e-5)
    assert np.abs(ref[~free_mask(atoms)]).max() > 1e-4  # fixed atoms keep their (nonzero) forces


def test_same_seed_identical_files_regardless_of_workers(tmp_path):
    spec = EMTCatalysisSpec(seed=11, sizes={"pool": 10, "initial": 4, "val": 2})
    a = generate(spec, tmp_path / "a", workers=1, progress=False)
    b = generate(spec, tmp_path / "b", workers=2, progress=False)
    for split in a:
        assert filecmp.cmp(a[split], b[split], shallow=False), split
    other = generate(EMTCatalysisSpec(seed=12, sizes={"pool": 10}), tmp_path / "c", workers=1, progress=False)
    assert not filecmp.cmp(a["pool"], other["pool"], shallow=False)


def test_cache_is_reused(tiny_spec, tiny_paths):
    from al_lightning.data.synthetic import ensure_dataset

    mtimes = {s: p.stat().st_mtime_ns for s, p in tiny_paths.items()}
    again = ensure_dataset(tiny_spec)
    assert {s: p.stat().st_mtime_ns for s, p in again.items()} == mtimes


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        EMTCatalysisSpec(sizes={"pol": 3})
    with pytest.raises(ValueError, match=">= 0"):
        EMTCatalysisSpec(sizes={"pool": -1})


def test_system_frames_count():
    spec = EMTCatalysisSpec(seed=0, relax_frames=2, md_frames=1, rattle_frames=1, max_force=1e9)
    frames = system_frames("pool", 0, spec)
    assert [f.info[K.SOURCE] for f in frames] == ["relax", "relax", "md", "rattle"]
