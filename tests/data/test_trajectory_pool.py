"""Trajectory mode of the EMT catalysis data: redundant, skewed pools split by system."""

import collections
import filecmp

import numpy as np
import pytest

from al_lightning import keys as K
from al_lightning.data.io import read_structures
from al_lightning.data.synthetic import SPLITS, EMTCatalysisSpec, build_system, ensure_dataset, generate

SIZES = {"pool": 400, "initial": 6, "val": 6, "test_id": 6, "test_ood_ads": 6, "test_ood_cat": 6,
         "test_ood_both": 6}
SPEC = EMTCatalysisSpec(seed=4, mode="trajectory", sizes=SIZES)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    paths = ensure_dataset(SPEC, workers=2, root=tmp_path_factory.mktemp("cache"))
    return {s: read_structures(p) for s, p in paths.items()}


def test_pool_is_redundant_and_skewed(splits):
    counts = np.array(sorted(collections.Counter(a.info["system_key"] for a in splits["pool"]).values())[::-1])
    assert counts.mean() >= 10  # many frames per system
    top = counts[: max(1, len(counts) // 10)].sum()
    assert top / counts.sum() >= 0.40  # the top 10% of systems hold >= 40% of the frames
    assert {a.info[K.SOURCE] for a in splits["pool"]} == {"relax", "md"}


def test_a_system_s_frames_are_consecutive_and_in_one_split(splits):
    keys = [a.info["system_key"] for a in splits["pool"]]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(runs))  # each system is one contiguous block of the pool file
    owner = {}
    for split, frames in splits.items():
        for a in frames:
            assert owner.setdefault(a.info["system_key"], split) == split


def test_no_system_in_two_splits_by_content(splits):
    """Systems are distinct by their starting geometry, not only by name."""
    def start_key(split, index):
        atoms = build_system(split, index, SPEC)
        return (atoms.get_chemical_formula(), tuple(np.round(atoms.positions[-1], 5)))

    seen = {}
    for split, frames in splits.items():
        for index in sorted({a.info[K.SYSTEM_ID] for a in frames}):
            assert seen.setdefault(start_key(split, index), split) == split


def test_evaluation_splits_keep_few_frames_per_system(splits):
    for split in splits:
        if split != "pool":
            counts = collections.Counter(a.info["system_key"] for a in splits[split])
            assert max(counts.values()) <= SPEC.eval_frames_per_system


def test_deterministic_for_any_worker_count(tmp_path):
    spec = EMTCatalysisSpec(seed=9, mode="trajectory", sizes={"pool": 40, "test_id": 4})
    a = generate(spec, tmp_path / "a", workers=1, progress=False)
    b = generate(spec, tmp_path / "b", workers=2, progress=False)
    assert all(filecmp.cmp(a[s], b[s], shallow=False) for s in ("pool", "test_id"))
    assert spec.key() != EMTCatalysisSpec(seed=9, sizes=dict(spec.sizes)).key()


@pytest.mark.parametrize("bad", [{"mode": "movie"}, {"traj_frames_mean": 1.0}, {"eval_frames_per_system": 0},
                                 {"traj_temperatures_K": ()}])
def test_bad_trajectory_options_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="EMT catalysis"):
        EMTCatalysisSpec(mode="trajectory", **bad) if "mode" not in bad else EMTCatalysisSpec(**bad)
