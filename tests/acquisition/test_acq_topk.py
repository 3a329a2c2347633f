"""Streaming top-K, shard merging and the chunked PV driver (docs/design.md §5, §6)."""

import weakref

import pytest
import torch

from al_lightning.acquisition import (
    PrecisionAccumulator,
    StreamingTopK,
    merge_topk,
    posterior_variance,
    score_pool,
)

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


def _chunk_stream(train_p: int, n_chunks: int, size: int, rows: int, alive: list, refs: list):
    """Generator of (ids, rows, vectors); records how many chunks are alive at each creation."""
    g = torch.Generator().manual_seed(1)
    for c in range(n_chunks):
        alive.append(sum(r() is not None for r in refs))
        feats = torch.randn(size, rows, train_p, generator=g)
        vecs = torch.randn(size, 2 * train_p, generator=g)
        refs.append(weakref.ref(feats))
        refs.append(weakref.ref(vecs))
        yield torch.arange(c * size, (c + 1) * size), feats, vecs


@pytest.mark.parametrize("size,space", [(3, "raw"), (16, "whitened"), (64, "raw")])
def test_score_pool_streams_with_at_most_two_chunks_alive(size, space):
    p, rows, n_chunks, k = 6, 2, 9, 20
    train = torch.randn(15, rows, p, dtype=F64)
    acc = PrecisionAccumulator(p)
    acc.add(0, train)
    prec = acc.precision()
    alive, refs = [], []
    res = score_pool(_chunk_stream(p, n_chunks, size, rows, alive, refs), prec, k,
                     lcmd_space=space, vector_dtype=None)
    # before creating chunk c, only chunk c-1 (2 tensors) may still be alive
    assert max(alive) <= 2, alive
    # recompute everything in one go and compare
    alive2, refs2 = [], []
    chunks = list(_chunk_stream(p, n_chunks, size, rows, alive2, refs2))
    assert max(alive2) > 2  # the check above can fail
    feats = torch.cat([c[1] for c in chunks]).to(F64)
    vecs = torch.cat([c[2] for c in chunks])
    pv = posterior_variance(feats, train, prec.lam)
    ids = torch.arange(len(feats))
    order = sorted(range(len(ids)), key=lambda i: (-float(pv[i]), i))[: min(k, len(ids))]
    assert torch.equal(res.ids, torch.tensor(order))
    assert torch.allclose(res.scores, pv[order], rtol=1e-10, atol=0)
    expect = prec.whiten_vectors(vecs[order]) if space == "whitened" else vecs[order]
    assert torch.allclose(res.vectors, expect, rtol=1e-12, atol=1e-14)
