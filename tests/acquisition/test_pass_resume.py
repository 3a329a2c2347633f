"""The pool pass survives kill -9 (1 and 2 processes), cuts batches by atoms, and splits on OOM."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from ase.build import molecule

from al_lightning.acquisition import select
from al_lightning.acquisition.distributed import Comm
from al_lightning.data.batches import atom_batches
from al_lightning.acquisition.pass_state import PassCheckpoint
from al_lightning.acquisition.topk import StreamingTopK

from test_acq_strategies import TINY_MODEL, _ctx, _setup, make_strategy, model_file  # noqa: F401 (fixture)

KW = dict(shortlist=15, batch_size=7, batch_atoms=None, calibration=False)  # 60 candidates: 9 batches


def _pass_worker(rank, world, init_file, model_file, spec, out_dir, fault, kw):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    if fault:
        os.environ["AL_FAULT"] = fault
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    module, dm = _setup(spec, model_file)
    ctx = _ctx(module, dm, budget=6, comm=Comm(rank, world))
    ctx.pass_state = PassCheckpoint(Path(out_dir) / "round_000", minutes=0)
    selection = select(make_strategy("pv_lcmd", **kw), ctx)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"ids": selection.ids.tolist(),
                                                              "resumed_from": selection.resumed_from}))
    if world > 1:
        torch.distributed.destroy_process_group()


def _spawn(world, tmp, model_file, spec, run, fault=None, kw=KW):
    """Run the ranks; with ``fault`` every rank is killed at its own n-th scored batch. The ranks are
    joined one by one (mp.spawn would terminate the others when the first dies, before they saved
    the batch they are on: a race, not what a crash of the whole job leaves)."""
    args = (world, str(tmp / f"init{run}"), model_file, spec, str(tmp), fault, kw)
    ctx = mp.start_processes(_pass_worker, args=args, nprocs=world, join=False, start_method="spawn")
    for proc in ctx.processes:
        proc.join(timeout=300)
    codes = [proc.exitcode for proc in ctx.processes]
    for proc in ctx.processes:
        if proc.is_alive():
            proc.kill()
    if fault:
        assert codes == [-9] * world, codes
        return None
    assert codes == [0] * world, codes
    return json.loads((tmp / "rank0.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_killed_pass_resumes_from_its_state_and_picks_the_uninterrupted_ids(tiny_spec, model_file, tmp_path, world):
    module, dm = _setup(tiny_spec, model_file)
    reference = select(make_strategy("pv_lcmd", **KW), _ctx(module, dm, budget=6)).ids.tolist()
    # kill -9 after local batch 1, then (resumed) 2 batches later, then 1 more: three kill points
    stops, position = [], 0
    for run, more in enumerate([1, 2, 1]):
        assert _spawn(world, tmp_path, model_file, tiny_spec, run, fault=f"pool:{more}") is None
        position += more
        stops.append(position)
        assert (tmp_path / "round_000" / "pass_state.pt").exists()
        assert (tmp_path / "round_000" / "pass_state.rank1.pt").exists() == (world == 2)
    final = _spawn(world, tmp_path, model_file, tiny_spec, "last")
    assert final["ids"] == reference
    assert final["resumed_from"] == stops[-1] * world  # rank 0's next batch (batches are dealt b mod W)


def test_a_pass_state_of_another_pass_is_set_aside(tiny_spec, model_file, tmp_path, capsys):
    module, dm = _setup(tiny_spec, model_file)
    ctx = _ctx(module, dm, budget=6)
    ctx.pass_state = PassCheckpoint(tmp_path, minutes=0)
    first = select(make_strategy("pv_lcmd", **KW), ctx)
    assert first.resumed_from is None and (tmp_path / "pass_state.pt").exists()
    again = select(make_strategy("pv_lcmd", **KW), ctx)  # the finished pass's state: resumes at its end
    assert again.resumed_from == 9 and again.ids.tolist() == first.ids.tolist()
    other = select(make_strategy("pv_lcmd", **{**KW, "rel_lambda": 0.5}), ctx)
    assert other.resumed_from is None
    assert "belongs to another pass" in capsys.readouterr().err
    (tmp_path / "pass_state.pt").write_bytes(b"cut")
    assert select(make_strategy("pv_lcmd", **KW), ctx).ids.tolist() == first.ids.tolist()
    assert "unreadable" in capsys.readouterr().err


def test_topk_state_round_trips_weights_only(tmp_path):
    gen = torch.Generator().manual_seed(0)
    whole, half = StreamingTopK(5, torch.float32), StreamingTopK(5, torch.float32)
    chunks = [(torch.rand(7, generator=gen, dtype=torch.float64), torch.arange(7 * c, 7 * c + 7),
               torch.randn(7, 3, generator=gen)) for c in range(4)]
    for c in chunks:
        whole.update(*c)
    for c in chunks[:2]:
        half.update(*c)
    torch.save(half.state_dict(), tmp_path / "s.pt")
    resumed = StreamingTopK(5)
    resumed.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for c in chunks[2:]:
        resumed.update(*c)
    a, b = whole.result(), resumed.result()
    assert torch.equal(a.ids, b.ids) and torch.equal(a.scores, b.scores) and torch.equal(a.vectors, b.vectors)
    with pytest.raises(ValueError, match="saved shortlist has k = 5"):
        StreamingTopK(4).load_state_dict(half.state_dict())


def test_atom_batches_respect_the_budget_and_cover_the_ids():
    rng = np.random.default_rng(0)
    atoms = rng.choice([12, 20, 300], size=200, p=[0.5, 0.45, 0.05])
    ids = np.arange(1000, 1200)
    batches = atom_batches(ids, atoms, 400)
    assert np.array_equal(np.concatenate(batches), ids)
    size = dict(zip(ids.tolist(), atoms.tolist()))
    for b in batches:
        total = sum(size[i] for i in b.tolist())
        assert total <= 400 or len(b) == 1  # a 300-atom structure may fill a batch alone
    with pytest.raises(ValueError, match="atom budget must be >= 1"):
        atom_batches(ids, atoms, 0)


@pytest.fixture(scope="module")
def mixed_pool(tmp_path_factory, tiny_paths):
    """The tiny EMT pool with a few 100–200-atom structures among the 10–20-atom frames."""
    from al_lightning.data.io import read_structures, write_extxyz

    frames = read_structures(tiny_paths["pool"])
    rng = np.random.default_rng(1)
    for k in (5, 23, 41):
        big = frames[k].repeat((3, 3, 1)) if k != 41 else frames[k].repeat((2, 2, 2))
        big.positions += rng.normal(0, 0.02, big.positions.shape)
        big.info, big.arrays = dict(frames[k].info), {n: big.arrays[n] for n in ("numbers", "positions")}
        frames[k] = big
    path = tmp_path_factory.mktemp("mixed") / "pool.extxyz"
    write_extxyz(path, frames)
    return path


def test_fixed_and_atom_budget_batches_pick_the_same_ids(tiny_spec, tiny_paths, model_file, mixed_pool):
    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.model.module import MACEModule

    torch.manual_seed(0)
    files = {"pool": str(mixed_pool), "initial": str(tiny_paths["initial"]), "val": str(tiny_paths["val"])}
    dm = ActiveDataModule(files=files, eval_batch_size=8)
    module = MACEModule(model=TINY_MODEL, foundation=model_file, dtype="float64", forces_weight=10.0)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    atoms = dm.pool_atom_counts()
    assert atoms.max() > 8 * np.median(atoms)
    picks = {}
    for name, batch_atoms in [("fixed", None), ("auto", "auto"), ("tight", int(atoms.max()))]:
        kw = {**KW, "batch_atoms": batch_atoms}
        picks[name] = select(make_strategy("pv_lcmd", **kw), _ctx(module, dm, budget=6)).ids.tolist()
    assert picks["fixed"] == picks["auto"] == picks["tight"]


def test_out_of_memory_splits_the_batch_and_keeps_the_ids(tiny_spec, model_file, monkeypatch, capsys):
    module, dm = _setup(tiny_spec, model_file)
    reference = select(make_strategy("pv_lcmd", **KW), _ctx(module, dm, budget=6)).ids.tolist()
    monkeypatch.setenv("AL_FAULT", "pool_batch:3:OOM,pool_batch:9:OOM")
    import al_fault_plugin

    monkeypatch.setattr(al_fault_plugin, "_counts", {})
    assert select(make_strategy("pv_lcmd", **KW), _ctx(module, dm, budget=6)).ids.tolist() == reference
    err = capsys.readouterr().err
    assert err.count("pool pass: out of memory") == 1 and "splitting the pool batches" in err  # said once
