"""Streaming top-K, shard merging and the PV scorer feeding it (docs/design.md §5, §6)."""

import pytest
import torch

from al_lightning.acquisition import (
    PVStrategy,
    StreamingTopK,
    build_precision,
    gram_partial,
    merge_topk,
    posterior_variance,
)
from al_lightning.acquisition.pv import PVScorer
from al_lightning.features import PoolRows

F64 = torch.float64


def make_pool(n: int, d: int = 5, seed: int = 0):
    """Scores with many exact ties (3 decimals of few values), shuffled unique ids."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 12, (n,), generator=g).to(F64) / 8
    ids = torch.randperm(10 * n, generator=g)[:n]
    vectors = torch.randn(n, d, generator=g)
    return scores, ids, vectors


def reference_topk(scores, ids, vectors, k):
    """Full sort with Python's sorted: score descending, then id ascending."""
    order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), int(ids[i])))[:k]
    order = torch.tensor(order)
    return scores[order], ids[order], vectors[order]


@pytest.mark.parametrize("chunk", [1, 7, 50, 333, 1000])
@pytest.mark.parametrize("k", [1, 40, 400])
def test_streaming_topk_equals_full_sort(chunk, k):
    scores, ids, vectors = make_pool(600, seed=chunk)
    top = StreamingTopK(k)
    for s in range(0, 600, chunk):
        top.update(scores[s : s + chunk], ids[s : s + chunk], vectors[s : s + chunk])
    res = top.result()
    ref_s, ref_i, ref_v = reference_topk(scores, ids, vectors, k)
    assert torch.equal(res.ids, ref_i) and torch.equal(res.scores, ref_s)
    assert torch.equal(res.vectors, ref_v)


def test_merge_of_shards_equals_single_pass():
    scores, ids, vectors = make_pool(900, seed=5)
    k, batch = 64, 37
    single = StreamingTopK(k)
    ranks = [StreamingTopK(k) for _ in range(3)]
    for b, s in enumerate(range(0, 900, batch)):
        sl = slice(s, s + batch)
        single.update(scores[sl], ids[sl], vectors[sl])
        ranks[b % 3].update(scores[sl], ids[sl], vectors[sl])
    ref = single.result()
    for parts in ([r.result() for r in ranks], [r.result() for r in reversed(ranks)]):
        merged = merge_topk(parts, k)
        assert torch.equal(merged.ids, ref.ids) and torch.equal(merged.scores, ref.scores)
        assert torch.equal(merged.vectors, ref.vectors)
    with pytest.raises(ValueError, match="more than one"):
        merge_topk([ref, ref], k)


def test_topk_validation():
    top = StreamingTopK(3)
    with pytest.raises(ValueError, match="NaN"):
        top.update(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="duplicate"):
        top.update(torch.tensor([1.0, 2.0]), torch.tensor([4, 4]))
    top.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="already in the shortlist"):
        top.update(torch.tensor([5.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="vectors"):
        top.update(torch.tensor([5.0]), torch.tensor([9]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="positive"):
        StreamingTopK(0)


def _chunks(p: int, n_chunks: int, size: int, rows: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.arange(c * size, (c + 1) * size), torch.randn(size, rows, p, generator=g, dtype=F64),
             torch.randn(size, 2 * p, generator=g, dtype=F64)) for c in range(n_chunks)]


@pytest.mark.parametrize("size,space,selector", [(3, "raw", "shortlist_lcmd"), (16, "whitened", "top_b"),
                                                 (64, "raw", "shortlist_lcmd"), (16, "whitened", "lcmd")])
def test_pv_scorer_chunk_by_chunk_equals_the_whole_pool_at_once(size, space, selector):
    """The production pool-side scoring (PVScorer.score → StreamingTopK) against brute-force PV."""
    p, rows, n_chunks, k = 6, 2, 9, 20
    train = torch.randn(15, rows, p, dtype=F64)
    prec = build_precision(gram_partial(train), rel_lambda=1e-3)
    strategy = PVStrategy(selector=selector, lcmd_space=space)
    scorer = PVScorer(strategy, None, k, prec, torch.zeros(0, 2 * p, dtype=F64), gram_partial(train), F64, 0.0, 0.0)
    top = StreamingTopK(k)
    chunks = _chunks(p, n_chunks, size, rows)
    for ids, feats, vecs in chunks:
        top.update(*scorer.score(None, PoolRows(ids, feats, vecs, None, None)))
    res = top.result()
    feats, vecs = torch.cat([c[1] for c in chunks]), torch.cat([c[2] for c in chunks])
    if selector == "lcmd":  # LCMD over the pool: no PV computed, every candidate kept in id order
        pv, order = torch.zeros(len(feats), dtype=F64), list(range(k))
        assert scorer.histogram.counts.sum() == 0
    else:
        pv = posterior_variance(feats, train, prec.lam)
        order = sorted(range(len(feats)), key=lambda i: (-float(pv[i]), i))[:k]
        assert scorer.histogram.counts.sum() == len(feats)
    assert torch.equal(res.ids, torch.tensor(order))
    assert torch.allclose(res.scores, pv[order], rtol=1e-10, atol=0)
    expect = prec.whiten_vectors(vecs[order]) if space == "whitened" else vecs[order]
    assert torch.allclose(res.vectors, expect, rtol=1e-12, atol=1e-14)
