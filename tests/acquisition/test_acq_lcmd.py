"""LCMD against an O(n²) from-scratch reference (docs/design.md §5)."""

import pytest
import torch

from al_lightning.acquisition import select_lcmd, select_lcmd_ids

F64 = torch.float64


class Exhausted(Exception):
    pass


def reference_lcmd(pool: torch.Tensor, b: int, train: torch.Tensor | None = None) -> list[int]:
    """Recompute all distances to all centres at every step (direct differences)."""
    x = pool.to(F64)
    centres = [] if train is None else list(train.to(F64))
    picks: list[int] = []
    for _ in range(b):
        if not centres:
            idx = int(torch.argmax((x * x).sum(1)))  # first maximum
        else:
            c = torch.stack(centres)
            d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (K, n_centres)
            assign = torch.argmin(d2, dim=1)  # earliest centre on ties
            mind = d2.min(dim=1).values
            sums = torch.zeros(len(centres), dtype=F64).index_add_(0, assign, mind)
            cand = torch.where(sums[assign] == sums.max(), mind, -torch.inf)
            cand[picks] = -torch.inf
            idx = int(torch.argmax(cand))  # lowest index on ties
            if float(cand[idx]) <= 0:
                raise Exhausted(len(picks))
        picks.append(idx)
        centres.append(x[idx])
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_train", [0, 7, 300])  # 300 > K: more centres than points
def test_lcmd_matches_reference_on_random_data(seed, n_train):
    g = torch.Generator().manual_seed(seed)
    # a few anisotropic blobs so clusters differ in size
    centres = 4 * torch.randn(6, 10, generator=g, dtype=F64)
    pool = centres[torch.randint(0, 6, (240,), generator=g)] + torch.randn(240, 10, generator=g, dtype=F64)
    train = torch.randn(n_train, 10, generator=g, dtype=F64) if n_train else None
    ref = reference_lcmd(pool, 40, train)
    for lookahead in (1, 24):
        got = select_lcmd(pool, 40, train, lookahead=lookahead, block_elems=500)
        assert got.dtype == torch.int64 and got.tolist() == ref


def _integer_pool(seed: int, n: int = 160, d: int = 3) -> torch.Tensor:
    """Small-integer points: many duplicates and exactly tied distances (exact arithmetic)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, d), generator=g).to(F64)


@pytest.mark.parametrize("seed", [3, 4])
def test_lcmd_ties_and_duplicates_deterministic_by_index(seed):
    pool = _integer_pool(seed)
    train = pool[:5].clone() + torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    distinct = torch.unique(pool, dim=0)
    firsts = sorted(int((pool == v).all(1).nonzero()[0]) for v in distinct)
    n_distinct = len(firsts)
    for b in (10, 30, n_distinct):
        got = select_lcmd(pool, b, lookahead=5).tolist()
        assert got == reference_lcmd(pool, b)
        assert len(set(map(tuple, pool[got].tolist()))) == b  # never the same point twice
        assert set(got) <= set(firsts)  # among duplicates the lowest index is taken
    assert sorted(select_lcmd(pool, n_distinct).tolist()) == firsts
    with pytest.raises(ValueError, match="only .* of batch_size"):
        select_lcmd(pool, n_distinct + 1)
    filled = select_lcmd(pool, n_distinct + 2, on_exhausted="fill").tolist()
    rest = [i for i in range(len(pool)) if i not in set(firsts)][:2]
    assert filled[:n_distinct] == select_lcmd(pool, n_distinct).tolist() and filled[-2:] == rest
    got = select_lcmd(pool, 12, train).tolist()
    assert got == reference_lcmd(pool, 12, train)
    on_train = {tuple(v) for v in train.tolist()}
    assert not any(tuple(pool[i].tolist()) in on_train for i in got)


def test_lcmd_first_pick_is_largest_norm_and_ids_mapping():
    pool = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, -3.0], [0.5, 0.5]], dtype=F64)
    assert int(select_lcmd(pool, 1)[0]) == 1  # ties in norm: lowest index
    ids = torch.tensor([40, 10, 30, 20])
    # sorted by id the vectors are rows [1, 3, 2, 0]; their first pick is row 1 -> id 10
    got = select_lcmd_ids(ids, pool, 2)
    expect = torch.tensor([10, 40, 30, 20])[torch.tensor(reference_lcmd(pool[[1, 3, 2, 0]], 2))]
    assert torch.equal(got, expect)


def test_lcmd_float32_path_matches_float64_despite_offset():
    g = torch.Generator().manual_seed(9)
    pool = torch.randn(300, 64, generator=g, dtype=F64) * torch.rand(300, 1, generator=g, dtype=F64)
    pool = pool + 1e3  # large common offset: uncentred float32 would lose the distances
    ref = select_lcmd(pool, 30)
    assert torch.equal(select_lcmd(pool.float(), 30), ref)


def test_lcmd_validation():
    pool = torch.randn(10, 4)
    with pytest.raises(ValueError, match="batch_size 11 > number of pool points"):
        select_lcmd(pool, 11)
    with pytest.raises(ValueError, match="does not match"):
        select_lcmd(pool, 2, torch.randn(3, 5))
    with pytest.raises(ValueError, match="non-finite"):
        select_lcmd(torch.full((3, 2), float("inf")), 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        select_lcmd(pool, -1)
    with pytest.raises(ValueError, match="shape"):
        select_lcmd(torch.randn(10), 1)
    with pytest.raises(ValueError, match="unique"):
        select_lcmd_ids(torch.tensor([1, 1]), torch.randn(2, 3), 1)
    assert select_lcmd(pool, 0).shape == (0,)


@pytest.mark.parametrize("block_elems", [3, 1 << 20])
def test_lcmd_point_equidistant_to_two_centres_joins_the_earliest(block_elems):
    pool = torch.tensor([[3.0, 0.0], [0.0, 0.0], [-3.0, 0.0]], dtype=F64)
    train = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=F64)
    # (0,0) joins centre 0 → its cluster sums 4 + 1 > 4 → the farthest member (-3,0) first
    got = select_lcmd(pool, 2, train, block_elems=block_elems).tolist()
    assert got == reference_lcmd(pool, 2, train) == [2, 0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lcmd_float_duplicates_count_as_zero_distance(dtype):
    g = torch.Generator().manual_seed(12)
    base = torch.randn(20, 33, generator=g, dtype=F64) * 10 ** torch.randn(20, 1, generator=g)
    pool = base[torch.randperm(60, generator=g) % 20].to(dtype)
    got = select_lcmd(pool, 20).tolist()
    assert len({tuple(pool[i].tolist()) for i in got}) == 20
    with pytest.raises(ValueError, match="distinct"):
        select_lcmd(pool, 21)
