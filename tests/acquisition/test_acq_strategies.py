"""Strategies on a real (tiny) MACE: PV ranks informative structures, 1 vs 2 processes agree."""

import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from al_lightning.acquisition import AcquisitionContext, PVStrategy, build_strategy, select
from al_lightning.acquisition.distributed import Comm
from al_lightning.acquisition.pool_pass import training_side
from al_lightning.acquisition.predict import predict_batches
from al_lightning.data.batches import ShardBatches
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


def _ctx(module, dm, budget, comm=None, device="cpu"):
    return AcquisitionContext(module=module, datamodule=dm, round=0, seed=0, budget=budget,
                              candidates=dm.candidate_ids(), comm=comm or Comm(), device=torch.device(device))


def make_strategy(name, **kwargs):
    return build_strategy(name, kwargs)


@pytest.fixture(scope="module")
def model_file(tiny_spec, tiny_paths, tmp_path_factory):
    module, _ = _setup(tiny_spec)
    path = tmp_path_factory.mktemp("model") / "tiny.model"
    torch.save(module.net, path)
    return str(path)


def _pv_of(module, dm, strategy, ids):
    ctx = _ctx(module, dm, budget=1)
    pool_spec = strategy.features.prepare(module.net)
    precision, _, _ = training_side(ctx, pool_spec.training(), strategy.rel_lambda, 8)
    scores = {}
    for _, rows in predict_batches(ctx, dm.pool_dataset(), ShardBatches(np.asarray(ids), 8), pool_spec):
        scores.update(zip(rows.ids.tolist(), precision.score(rows.rows).tolist()))
    return np.array([scores[i] for i in ids])


def test_pv_lcmd_picks_high_variance_and_variance_drops_once_labeled(tiny_spec, model_file, tiny_paths):
    module, dm = _setup(tiny_spec, model_file)
    strategy = make_strategy("pv_lcmd", feature_kind="ntk_ef", shortlist=20, batch_size=8)
    selection = select(strategy, _ctx(module, dm, budget=6))
    picked = selection.ids
    assert len(set(picked.tolist())) == 6 and set(picked.tolist()) <= set(dm.candidate_ids().tolist())
    pool_ids = dm.candidate_ids()
    before = _pv_of(module, dm, strategy, pool_ids)
    sel_before = before[np.isin(pool_ids, picked)]
    assert np.median(sel_before) > 2.0 * np.median(before), (np.median(sel_before), np.median(before))
    pool = read_structures(tiny_paths["pool"])
    dm.add(picked.tolist(), [pool[i] for i in picked])
    after = _pv_of(module, dm, strategy, picked.tolist())
    assert np.all(after < 0.5 * sel_before), (sel_before, after)
    d = selection.diagnostics["scalars"]
    assert d["pv/selected_median"] > d["pv/pool_median"] and 0 < d["pv/effective_dimension"]
    assert "calibration/test_id/spearman_pv_force_error" in d


@pytest.mark.parametrize("name, kwargs", [
    ("pv_topb", {"feature_kind": "ntk_e"}),
    ("lcmd", {"feature_kind": "ntk_f", "lcmd_space": "whitened"}),
    ("pv_lcmd", {"feature_kind": "activation", "shortlist": 12}),
    ("pv_lcmd", {"feature_kind": "descriptor", "shortlist": 12}),
    ("pv", {"selector": {"class_path": "balanced", "init_args": {"shortlist": 12, "pool_share": 0.4}}}),
    ("committee_e", {"members": 2, "epochs": 1}),
    ("committee_f", {"members": 3, "epochs": 1, "bootstrap": True}),
])
def test_every_strategy_selects_budget_distinct_candidates(tiny_spec, model_file, name, kwargs):
    module, dm = _setup(tiny_spec, model_file)
    dm.exclude({0, 1, 2})
    picked = make_strategy(name, calibration=False, **kwargs) if name.startswith(("pv", "lcmd")) \
        else make_strategy(name, **kwargs)
    ids = select(picked, _ctx(module, dm, budget=5)).ids
    assert len(ids) == 5 and len(set(ids.tolist())) == 5
    assert set(ids.tolist()) <= set(range(3, 60))
    again = select(make_strategy(name, **kwargs), _ctx(module, dm, budget=5)).ids
    np.testing.assert_array_equal(np.sort(ids), np.sort(again))  # deterministic


def test_strategy_option_errors():
    with pytest.raises(ValueError, match=r"\['shortlst'\] are not options of 'pv_lcmd'"):
        make_strategy("pv_lcmd", shortlst=3)
    with pytest.raises(ValueError, match="contradict strategy 'pv_lcmd'"):
        make_strategy("pv_lcmd", mode="pv_topb")
    with pytest.raises(ValueError, match="feature_kind must be one of"):
        make_strategy("pv_lcmd", feature_kind="ntk_x")
    with pytest.raises(ValueError, match="committee needs members >= 2"):
        make_strategy("committee_f", members=1)
    with pytest.warns(UserWarning, match="shortlist applies to pv_lcmd; lcmd ignores it"):
        make_strategy("lcmd", shortlist=5)
    with pytest.warns(UserWarning, match=r"\['sketch_dim'\] are NTK options; feature_kind activation ignores them"):
        make_strategy("pv_lcmd", feature_kind="activation", sketch_dim=8)


def test_shortlist_smaller_than_budget_is_refused(tiny_spec, model_file):
    module, dm = _setup(tiny_spec, model_file)
    with pytest.raises(ValueError, match="shortlist K=3 is smaller than the budget B=5"):
        select(make_strategy("pv_lcmd", shortlist=3), _ctx(module, dm, budget=5))
    with pytest.raises(ValueError, match="budget 100 is larger than the 60 pool candidates"):
        select(make_strategy("pv_topb"), _ctx(module, dm, budget=100))


def _worker(rank, world, init_file, model_file, spec, out_dir, name, kwargs):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        module, dm = _setup(spec, model_file)
        strategy = make_strategy(name, **kwargs)
        selection = select(strategy, _ctx(module, dm, budget=6, comm=Comm(rank, world)))
        ids, shard = selection.ids, selection.shard_ids
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({"ids": ids.tolist(), "shard": shard}, fh)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [("pv_lcmd", {"shortlist": 15, "batch_size": 7}),
                                          ("committee_f", {"members": 2, "epochs": 1, "batch_size": 7})])
def test_two_processes_select_the_same_ids_as_one(tiny_spec, model_file, tmp_path, name, kwargs):
    module, dm = _setup(tiny_spec, model_file)
    single = select(make_strategy(name, **kwargs), _ctx(module, dm, budget=6))
    one = single.ids
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), model_file, tiny_spec, str(tmp_path), name, kwargs),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["ids"] == one.tolist()
    if name == "pv_lcmd":
        shards = [set(r["shard"]) for r in ranks]
        assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(range(60))
        assert sorted(single.shard_ids) == list(range(60))


def test_class_path_equals_short_name_and_bad_specs_fail_in_one_line():
    by_path = build_strategy({"class_path": "al_lightning.acquisition.PVStrategy",
                              "init_args": {"mode": "pv_topb", "rel_lambda": 1e-4}})
    by_name = build_strategy("pv_topb", {"rel_lambda": 1e-4})
    assert isinstance(by_path, PVStrategy) and vars(by_path) == vars(by_name)
    assert build_strategy("al_lightning.acquisition.RandomStrategy").name == "random"
    for spec, match in [("pv_lcdm", "campaign strategy 'pv_lcdm' unknown; available: .*pv_lcmd"),
                        ({"class_path": "al_lightning.acquisition.NoSuch"}, "cannot import"),
                        ({"class_path": "al_lightning.acquisition.TopK"}, "is not a Strategy class"),
                        ({"class_path": "al_lightning.acquisition.PVStrategy", "init_args": {"lam": 1}},
                         r"\['lam'\] are not options of 'PVStrategy'"),
                        ({"klass": "x"}, "must be a short name or")]:
        with pytest.raises(ValueError, match=match) as info:
            build_strategy(spec)
        assert "\n" not in str(info.value)


def test_each_pool_chunk_is_scored_once(tiny_spec, model_file, monkeypatch):
    from al_lightning.acquisition.posterior import Precision

    module, dm = _setup(tiny_spec, model_file)
    calls = []
    real = Precision.score
    monkeypatch.setattr(Precision, "score", lambda self, rows, dtype=torch.float64: calls.append(len(rows))
                        or real(self, rows, dtype))
    select(make_strategy("pv_lcmd", shortlist=20, batch_size=8, batch_atoms=None, calibration=False),
           _ctx(module, dm, budget=6))
    assert calls == [8] * 7 + [4]  # 60 candidates in batches of 8, each scored exactly once
    calls.clear()
    select(make_strategy("pv_lcmd", shortlist=20, batch_size=8, batch_atoms=100, calibration=False),
           _ctx(module, dm, budget=6))
    atoms = dm.pool_atom_counts()
    assert sum(calls) == 60 and len(calls) > 1  # by atom budget: every candidate once, in several batches
    assert max(calls) <= max(1, 100 // int(atoms.min()))


def test_float32_and_float64_scoring_pick_the_same_ids(tiny_spec, model_file):
    module, dm = _setup(tiny_spec, model_file)
    picks = {}
    for dtype in ("float32", "float64", "auto"):
        for name in ("pv_topb", "pv_lcmd"):
            sel = select(make_strategy(name, score_dtype=dtype, shortlist=20, calibration=False),
                         _ctx(module, dm, budget=6))
            picks[dtype, name] = sel.ids.tolist()
            assert sel.diagnostics["scalars"]["pv/float32_scoring"] == float(dtype == "float32" or (
                dtype == "auto" and sel.diagnostics["scalars"]["pv/float32_error_bound"] <= 1e-3))
    for name in ("pv_topb", "pv_lcmd"):
        assert picks["float32", name] == picks["float64", name] == picks["auto", name]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["pv_lcmd", "pv_topb", "committee_f"])
def test_cuda_engine_picks_the_cpu_ids(tiny_spec, model_file, name):
    module, dm = _setup(tiny_spec, model_file)
    kwargs = {"members": 2, "epochs": 1} if name.startswith("committee") else {"shortlist": 20, "calibration": False}
    cpu = select(make_strategy(name, **kwargs), _ctx(module, dm, budget=6)).ids
    gpu = select(make_strategy(name, **kwargs), _ctx(module, dm, budget=6, device="cuda"))
    assert gpu.ids.tolist() == cpu.tolist()
    assert next(module.net.parameters()).device.type == "cpu"  # select() puts the net back


def test_committee_member_is_a_plain_fit_of_the_module(tiny_spec, model_file):
    """Member m = the module fitted by a plain Lightning Trainer with the member's seed and data:
    the same validation curve and the same final weights (no hand-written loop)."""
    import copy

    import lightning.pytorch as pl

    from al_lightning.acquisition import CommitteeStrategy
    from al_lightning.acquisition.committee import member_seed
    from al_lightning.model.callbacks import LossCurve

    module, dm = _setup(tiny_spec, model_file)
    nets, records = CommitteeStrategy(members=2, reinit="", epochs=3).fit_members(_ctx(module, dm, budget=5))
    seed = member_seed(0, 0, 1)
    plain, plain_dm = copy.deepcopy(module), ActiveDataModule(emt=tiny_spec, eval_batch_size=8, seed=seed)
    plain.build(plain_dm)
    pl.seed_everything(seed, workers=True, verbose=False)
    curve = LossCurve()
    pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, inference_mode=False,
               use_distributed_sampler=False, num_sanity_val_steps=0, callbacks=[curve]).fit(plain, datamodule=plain_dm)
    assert records[1]["seed"] == seed and len(records[1]["val_loss"]) == 3
    assert records[1]["val_loss"] == curve.values
    for (name, a), b in zip(nets[1].state_dict().items(), plain.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert records[0]["val_loss"] != records[1]["val_loss"]  # members differ (their seeds)


def test_oracle_control_takes_the_largest_true_force_errors(tiny_spec, model_file):
    from al_lightning import keys as K
    from al_lightning.acquisition import OracleStrategy

    module, dm = _setup(tiny_spec, model_file)
    ids = select(OracleStrategy(batch_size=7), _ctx(module, dm, budget=5)).ids
    ctx, errs = _ctx(module, dm, budget=1), {}
    ds = dm.split_dataset("pool")
    for batch, out in predict_batches(ctx, ds, ShardBatches(np.arange(len(ds)), 60), None):  # one brute batch
        for g, sid in enumerate(batch[K.STRUCTURE_ID].tolist()):
            atoms = (batch[K.BATCH] == g) & batch[K.FREE_MASK]  # free atoms only (fixed ones are not scored)
            errs[sid] = float((out[K.OUT_FORCES][atoms] - batch[K.FORCES][atoms]).abs().mean())
    assert sorted(ids.tolist()) == sorted(sorted(errs, key=errs.get, reverse=True)[:5])


def test_one_per_system_sampler_spreads_over_systems(tiny_spec, model_file):
    from al_lightning.acquisition import SystemSampler

    module, dm = _setup(tiny_spec, model_file)
    pool = dm.structure_file("pool")
    system = {i: pool.raw(i).info.get("system_key") for i in range(len(pool))}
    n_systems = len(set(system.values()))
    b = min(6, n_systems)
    ids = select(SystemSampler(), _ctx(module, dm, budget=b)).ids
    assert len(set(ids.tolist())) == b and len({system[i] for i in ids.tolist()}) == b
    assert select(SystemSampler(), _ctx(module, dm, budget=b)).ids.tolist() == ids.tolist()  # seeded
