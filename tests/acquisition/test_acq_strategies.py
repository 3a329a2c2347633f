"""Strategies on a real (tiny) MACE: PV ranks informative structures, 1 vs 2 processes agree."""

import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from al_lightning.acquisition.distributed import Comm
from al_lightning.acquisition.pool_pass import PassSetup, training_side
from al_lightning.acquisition.registry import make_strategy
from al_lightning.acquisition.strategies import AcquisitionContext
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.io import read_structures
from al_lightning.model.mace import MACEConfig
from al_lightning.model.module import MACEModule

TINY_MODEL = MACEConfig(hidden_irreps="8x0e+8x1o", mlp_irreps="8x0e", radial_mlp=[16, 16], max_ell=1, r_max=4.0)


def _setup(spec, foundation=None):
    torch.manual_seed(0)
    module = MACEModule(model=TINY_MODEL, foundation=foundation, dtype="float64", forces_weight=10.0)
    dm = ActiveDataModule(emt=spec, eval_batch_size=8)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    return module, dm


def _ctx(module, dm, budget, comm=None):
    return AcquisitionContext(module=module, datamodule=dm, round=0, seed=0, budget=budget,
                              candidates=dm.candidate_ids(), comm=comm or Comm())


@pytest.fixture(scope="module")
def model_file(tiny_spec, tiny_paths, tmp_path_factory):
    module, _ = _setup(tiny_spec)
    path = tmp_path_factory.mktemp("model") / "tiny.model"
    torch.save(module.net, path)
    return str(path)


def _pv_of(module, dm, strategy, ids):
    setup = PassSetup(module.net, torch.device("cpu"), 1.0, 10.0, 8, Comm())
    train_spec, pool_spec = strategy.specs(module.net)
    precision, _, _ = training_side(setup, dm, train_spec, strategy.rel_lambda)
    from al_lightning.acquisition.pool_pass import iter_rows
    from al_lightning.acquisition.distributed import fixed_batches

    scores = {}
    for _, rows in iter_rows(setup, dm, dm.pool_dataset(), fixed_batches(np.asarray(ids), 8), pool_spec):
        scores.update(zip(rows.ids.tolist(), precision.score(rows.rows).tolist()))
    return np.array([scores[i] for i in ids])


def test_pv_lcmd_picks_high_variance_and_variance_drops_once_labeled(tiny_spec, model_file, tiny_paths):
    module, dm = _setup(tiny_spec, model_file)
    strategy = make_strategy("pv_lcmd", feature_kind="ntk_ef", shortlist=20, batch_size=8)
    picked = strategy.select(_ctx(module, dm, budget=6))
    assert len(set(picked.tolist())) == 6 and set(picked.tolist()) <= set(dm.candidate_ids().tolist())
    pool_ids = dm.candidate_ids()
    before = _pv_of(module, dm, strategy, pool_ids)
    sel_before = before[np.isin(pool_ids, picked)]
    assert np.median(sel_before) > 2.0 * np.median(before), (np.median(sel_before), np.median(before))
    pool = read_structures(tiny_paths["pool"])
    dm.add(picked.tolist(), [pool[i] for i in picked])
    after = _pv_of(module, dm, strategy, picked.tolist())
    assert np.all(after < 0.5 * sel_before), (sel_before, after)
    d = strategy.diagnostics["scalars"]
    assert d["pv/selected_median"] > d["pv/pool_median"] and 0 < d["pv/effective_dimension"]
    assert "calibration/test_id/spearman_pv_force_error" in d


@pytest.mark.parametrize("name, kwargs", [
    ("pv_topb", {"feature_kind": "ntk_e"}),
    ("lcmd", {"feature_kind": "ntk_f", "lcmd_space": "whitened"}),
    ("pv_lcmd", {"feature_kind": "activation", "shortlist": 12}),
    ("pv_lcmd", {"feature_kind": "descriptor", "shortlist": 12}),
    ("committee_e", {"members": 2, "epochs": 1}),
    ("committee_f", {"members": 3, "epochs": 1}),
])
def test_every_strategy_selects_budget_distinct_candidates(tiny_spec, model_file, name, kwargs):
    module, dm = _setup(tiny_spec, model_file)
    dm.excluded_ids.update({0, 1, 2})
    picked = make_strategy(name, calibration=False, **kwargs) if name.startswith(("pv", "lcmd")) \
        else make_strategy(name, **kwargs)
    ids = picked.select(_ctx(module, dm, budget=5))
    assert len(ids) == 5 and len(set(ids.tolist())) == 5
    assert set(ids.tolist()) <= set(range(3, 60))
    again = make_strategy(name, **kwargs).select(_ctx(module, dm, budget=5))
    np.testing.assert_array_equal(np.sort(ids), np.sort(again))  # deterministic


def test_strategy_option_errors():
    with pytest.raises(ValueError, match="not options of 'pv_lcmd'"):
        make_strategy("pv_lcmd", shortlst=3)
    with pytest.raises(ValueError, match="feature_kind must be one of"):
        make_strategy("pv_lcmd", feature_kind="ntk_x")
    with pytest.raises(ValueError, match="committee needs members >= 2"):
        make_strategy("committee_f", members=1)


def test_shortlist_smaller_than_budget_is_refused(tiny_spec, model_file):
    module, dm = _setup(tiny_spec, model_file)
    with pytest.raises(ValueError, match="shortlist K=3 is smaller than the budget B=5"):
        make_strategy("pv_lcmd", shortlist=3).select(_ctx(module, dm, budget=5))
    with pytest.raises(ValueError, match="budget 100 is larger than the 60 pool candidates"):
        make_strategy("pv_topb").select(_ctx(module, dm, budget=100))


def _worker(rank, world, init_file, model_file, spec, out_dir, name, kwargs):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        module, dm = _setup(spec, model_file)
        strategy = make_strategy(name, **kwargs)
        ids = strategy.select(_ctx(module, dm, budget=6, comm=Comm(rank, world)))
        shard = getattr(strategy, "last_shard_ids", [])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({"ids": ids.tolist(), "shard": shard}, fh)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [("pv_lcmd", {"shortlist": 15, "batch_size": 7}),
                                          ("committee_f", {"members": 2, "epochs": 1, "batch_size": 7})])
def test_two_processes_select_the_same_ids_as_one(tiny_spec, model_file, tmp_path, name, kwargs):
    module, dm = _setup(tiny_spec, model_file)
    single = make_strategy(name, **kwargs)
    one = single.select(_ctx(module, dm, budget=6))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), model_file, tiny_spec, str(tmp_path), name, kwargs),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["ids"] == one.tolist()
    if name == "pv_lcmd":
        shards = [set(r["shard"]) for r in ranks]
        assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(range(60))
        assert sorted(single.last_shard_ids) == list(range(60))
