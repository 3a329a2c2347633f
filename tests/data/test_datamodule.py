"""ActiveDataModule: add / state round trip, samplers, hidden pool labels."""

import numpy as np
import pytest
import torch

from al_lightning import keys as K
from al_lightning.data.batches import ShardBatches
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.io import read_structures
from al_lightning.model.mace import z_table_from


@pytest.fixture
def dm(tiny_spec, tiny_paths):
    d = ActiveDataModule(emt=tiny_spec, batch_size=4, eval_batch_size=5)
    d.setup()
    d.attach(z_table_from(d.elements()), 4.0)
    return d


def test_add_and_state_round_trip(dm, tiny_paths):
    pool = read_structures(tiny_paths["pool"])
    ids = [7, 3, 21]
    dm.add(ids, [pool[i] for i in ids])
    dm.round = 2
    dm.exclude([5])
    assert len(dm.labeled_structures()) == 12 + 3
    assert set(ids) | {5} == set(range(60)) - set(dm.candidate_ids().tolist())
    state = dm.state_dict()
    fresh = ActiveDataModule(emt=dm.emt)
    fresh.load_state_dict(state)
    assert fresh.round == 2 and fresh.labeled_ids == ids and fresh.labeled.excluded == {5}
    for a, b in zip(fresh.added, dm.added):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.arrays[K.REF_FORCES], b.arrays[K.REF_FORCES])
        assert a.info[K.REF_ENERGY] == b.info[K.REF_ENERGY]
        np.testing.assert_array_equal(a.get_tags(), b.get_tags())
        assert a.constraints[0].get_indices().tolist() == b.constraints[0].get_indices().tolist()


def test_add_refuses_bad_input(dm, tiny_paths):
    pool = read_structures(tiny_paths["pool"])
    with pytest.raises(ValueError, match="2 ids but 1 structures"):
        dm.add([1, 2], [pool[1]])
    with pytest.raises(ValueError, match="duplicate ids"):
        dm.add([1, 1], [pool[1], pool[1]])
    with pytest.raises(ValueError, match="out of range"):
        dm.add([60], [pool[0]])
    dm.add([4], [pool[4]])
    with pytest.raises(ValueError, match="already labeled"):
        dm.add([4], [pool[4]])
    unlabeled = pool[6].copy()
    del unlabeled.info[K.REF_ENERGY]
    with pytest.raises(ValueError, match="label of pool id 6: no energy label"):
        dm.add([6], [unlabeled])
    assert dm.labeled_ids == [4]  # nothing half-added


def test_pool_graphs_hide_labels_and_carry_ids(dm):
    batch = next(iter(dm.pool_dataloader([9, 2, 30])))
    assert batch[K.STRUCTURE_ID].tolist() == [9, 2, 30]
    assert torch.all(batch[K.ENERGY_WEIGHT] == 0) and torch.all(batch[K.FORCES_WEIGHT] == 0)
    assert torch.all(batch[K.FORCES] == 0)


def test_eval_shards_are_disjoint_and_cover_without_padding():
    for n, world, size in [(10, 3, 2), (7, 2, 3), (2, 4, 1), (2, 4, 5)]:
        shards = [[i for b in ShardBatches(range(n), size, r, world) for i in b] for r in range(world)]
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(n))  # every index once: nothing padded, nothing repeated
        assert [len(ShardBatches(range(n), size, r, world)) for r in range(world)] == [
            len(range(r, -(-n // size), world)) for r in range(world)]


def test_every_rank_gets_an_eval_batch_of_a_split_smaller_than_the_batch_size(tiny_spec, monkeypatch):
    """8 validation structures, eval batches of 16, 2 ranks: Lightning refuses a rank with no batch."""
    dm = ActiveDataModule(emt=tiny_spec, eval_batch_size=16)
    dm.setup()
    dm.attach(z_table_from(dm.elements()), 4.0)
    n = len(dm.split_dataset("val"))
    for rank in (0, 1):
        monkeypatch.setattr(dm, "_rank_world", lambda rank=rank: (rank, 2))
        loader = dm.val_dataloader()
        assert len(loader) >= 1 and sum(int(b[K.NUM_ATOMS].numel()) for b in loader) in (n // 2, n - n // 2)


def test_train_loader_equal_counts_per_rank_and_seeded(dm):
    """train_dataloader's sampler (torch's DistributedSampler): every rank the same count
    (wrap-around padding), covering, seeded by (seed, round), reshuffled per epoch."""
    from torch.utils.data import DistributedSampler

    n = len(dm.labeled_dataset())
    world = 3 if n % 3 else 4
    lists = []
    for rank in range(world):
        dm.trainer = type("T", (), {"global_rank": rank, "world_size": world})()
        sampler = dm.train_dataloader().sampler
        assert isinstance(sampler, DistributedSampler)
        lists.append(list(sampler))
    dm.trainer = None
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == -(-n // world)
    assert set().union(*map(set, lists)) == set(range(n))
    again = dm.train_dataloader().sampler
    assert sorted(again) == list(range(n))
    first = list(again)
    again.set_epoch(1)
    assert list(again) != first
    dm.round += 1
    assert list(dm.train_dataloader().sampler) != first
    dm.round -= 1


def test_constructor_validation(tmp_path):
    with pytest.raises(ValueError, match="lacks required split"):
        ActiveDataModule(files={"initial": "a.xyz"})
    from al_lightning.data.synthetic import EMTCatalysisSpec
    from al_lightning.data.xtb import XTBMoleculesSpec

    with pytest.raises(ValueError, match="give one of 'emt', 'xtb' or 'files'"):
        ActiveDataModule(emt=EMTCatalysisSpec(), files={"initial": "a", "val": "b"})
    with pytest.raises(ValueError, match="give one of 'emt', 'xtb' or 'files'"):
        ActiveDataModule(emt=EMTCatalysisSpec(), xtb=XTBMoleculesSpec())
    xtb = ActiveDataModule(xtb=XTBMoleculesSpec(seed=4))
    assert xtb.embedded is xtb.xtb and xtb.elements() == ["H", "C", "N", "O"]
    assert set(xtb.split_paths()) == {"pool", "initial", "val", "test_id", "test_id_frames", "test_ood_mol",
                                      "test_ood_rxn"}
    assert {p.parent.name for p in xtb.split_paths().values()} == {XTBMoleculesSpec(seed=4).key()}
    d = ActiveDataModule(files={"initial": str(tmp_path / "a.xyz"), "val": str(tmp_path / "b.xyz")})
    assert [p.name for p in d.missing_files()] == ["a.xyz", "b.xyz"]


def test_graphs_are_built_in_worker_processes(dm):
    dm.num_workers = 2
    batches = list(dm.pool_dataloader(list(range(10)), batch_size=4))
    assert [b[K.STRUCTURE_ID].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][K.POSITIONS].dtype == torch.get_default_dtype()


def test_initial_size_draws_a_seeded_subset_of_the_initial_file(tiny_spec, tiny_paths):
    from al_lightning.data.io import DataError, read_structures

    full = read_structures(tiny_paths["initial"])
    picks = {}
    for seed in (0, 0, 1):
        dm = ActiveDataModule(emt=tiny_spec, initial_size=5, seed=seed)
        got = dm.labeled_structures()
        assert len(got) == 5
        idx = dm.initial_indices()
        assert all(np.allclose(a.positions, full[i].positions) for a, i in zip(got, idx))
        picks.setdefault(seed, []).append(idx)
    assert picks[0][0] == picks[0][1] and picks[0][0] != picks[1][0]
    assert len(ActiveDataModule(emt=tiny_spec).labeled_structures()) == len(full)
    with pytest.raises(DataError, match="initial_size 999 >"):
        ActiveDataModule(emt=tiny_spec, initial_size=999).labeled_structures()
    with pytest.raises(ValueError, match="initial_size must be >= 1"):
        ActiveDataModule(emt=tiny_spec, initial_size=0)


def test_member_view_keeps_the_labeled_set_and_changes_only_the_batch_order(tiny_spec, tiny_paths):
    dm = ActiveDataModule(emt=tiny_spec, initial_size=5, seed=3)
    view = dm.member_view(seed=12345)
    assert view.initial_indices() == dm.initial_indices() and view.seed == 12345 and dm.seed == 3
    boot = dm.member_view(seed=7, bootstrap=True)
    assert boot.initial_indices() == dm.initial_indices() and len(boot.train_indices) == 5


def test_to_cpu_moves_dataclass_fields():
    from al_lightning.acquisition.distributed import to_cpu
    from al_lightning.acquisition.topk import TopK

    top = TopK(torch.ones(2, dtype=torch.float64), torch.arange(2), None)
    moved = to_cpu(top)
    assert isinstance(moved, TopK) and torch.equal(moved.ids, top.ids) and moved.vectors is None


def test_member_view_is_built_not_shared(dm):
    """A committee member's view has its own labeled set (a copy) and seed; adding to the parent
    afterwards does not change it, and it trains on the parent's labeled structures."""
    pool = dm.structure_file("pool")
    dm.add([2, 7], [pool[2], pool[7]])
    view = dm.member_view(seed=11, bootstrap=True)
    assert view is not dm and view.labeled is not dm.labeled and view.seed == 11
    assert view.labeled_ids == [2, 7] and view.initial_indices() == dm.initial_indices()
    n = len(dm.labeled_structures())
    assert len(view.train_indices) == n and all(0 <= i < n for i in view.train_indices)
    dm.add([9], [pool[9]])
    dm.exclude([3])
    assert view.labeled_ids == [2, 7] and view.labeled.excluded == set()
    assert view._open is dm._open  # the same open files, read-only


def test_per_file_label_keys_override_the_data_wide_ones(tmp_path, tiny_paths):
    """A file whose labels sit under other keys (here ASE's calculator fields) names them itself."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    frames = read(tiny_paths["val"], index=":")
    for a in frames:
        energy, forces = a.info.pop("REF_energy"), a.arrays.pop("REF_forces")
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
    plain = tmp_path / "val_calc.extxyz"
    write(plain, frames, format="extxyz")
    files = {"initial": str(tiny_paths["initial"]), "pool": str(tiny_paths["pool"]),
             "val": {"path": str(plain), "energy_key": "energy", "forces_key": "forces"}}
    dm = ActiveDataModule(files=files)
    assert dm.structure_file("val").energy_key == "energy" and dm.structure_file("initial").energy_key == "REF_energy"
    assert dm.structure_file("val")[0].info["REF_energy"] == pytest.approx(frames[0].get_potential_energy())
