"""Posterior variance and training precision (docs/design.md §5, §6): float64 checks."""

import threading
from dataclasses import dataclass, field
from typing import Any, List

import pytest
import torch

from al_lightning.acquisition import (
    GramPartial,
    build_precision,
    cholesky_with_jitter,
    gram_partial,
    posterior_variance,
)
from al_lightning.acquisition.distributed import Comm, ordered_sum

F64 = torch.float64


def kernel_pv(pool_rows: torch.Tensor, train_rows: torch.Tensor, lam: float) -> torch.Tensor:
    """k(x,x) − k_xT (K_TT + lam I)⁻¹ k_Tx per row. pool_rows (n, p), train_rows (m, p)."""
    k_tt = train_rows @ train_rows.T
    k_xt = pool_rows @ train_rows.T
    sol = torch.linalg.solve(k_tt + lam * torch.eye(len(train_rows), dtype=F64), k_xt.T)
    return (pool_rows * pool_rows).sum(1) - (k_xt * sol.T).sum(1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


@pytest.mark.parametrize("n_train,p", [(30, 12), (10, 40), (25, 25)])
def test_pv_single_row_matches_kernel_formula(n_train, p):
    g = torch.Generator().manual_seed(n_train * 100 + p)
    train = torch.randn(n_train, p, generator=g, dtype=F64)
    pool = torch.randn(17, p, generator=g, dtype=F64)
    lam = 0.05 * float((train * train).sum(1).mean())
    pv = posterior_variance(pool, train, lam)
    ref = kernel_pv(pool, train, lam)
    assert pv.dtype == F64 and pv.shape == (17,)
    assert rel_err(pv, ref) < 1e-8
    assert bool((pv > 0).all()) and bool((pv <= (pool * pool).sum(1)).all())


def test_pv_multi_row_sums_row_variances():
    g = torch.Generator().manual_seed(7)
    p, r_pool, r_train = 16, 4, 3
    train = torch.randn(9, r_train, p, generator=g, dtype=F64)
    pool = torch.randn(11, r_pool, p, generator=g, dtype=F64)
    lam = 0.3
    pv = posterior_variance(pool, train, lam)
    rows = kernel_pv(pool.reshape(-1, p), train.reshape(-1, p), lam)
    ref = rows.reshape(11, r_pool).sum(1)
    assert rel_err(pv, ref) < 1e-8
    # single-row training input with the same rows gives the same answer
    assert rel_err(posterior_variance(pool, train.reshape(-1, p), lam), ref) < 1e-8


def test_pv_without_training_is_prior_variance():
    pool = torch.randn(5, 3, 8, dtype=F64)
    pv = posterior_variance(pool, torch.empty(0, 8, dtype=F64), 0.7)
    assert rel_err(pv, (pool * pool).sum((1, 2))) < 1e-12


def test_pv_validation_errors():
    pool, train = torch.randn(4, 6, dtype=F64), torch.randn(5, 6, dtype=F64)
    with pytest.raises(ValueError, match="does not match"):
        posterior_variance(pool, torch.randn(5, 7, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="non-finite"):
        posterior_variance(torch.full((2, 6), float("nan"), dtype=F64), train, 0.1)
    with pytest.raises(ValueError, match="lam"):
        posterior_variance(pool, train, 0.0)
    with pytest.raises(ValueError, match="lam"):
        posterior_variance(pool, train, float("inf"))
    with pytest.raises(ValueError, match="shape"):
        posterior_variance(torch.randn(6, dtype=F64), train, 0.1)


def test_precision_relative_lambda_and_whitening():
    g = torch.Generator().manual_seed(3)
    train = torch.randn(40, 2, 10, generator=g, dtype=F64)
    pool = torch.randn(8, 2, 10, generator=g, dtype=F64)
    total = ordered_sum(Comm(), 4, lambda b: gram_partial(train[10 * b : 10 * (b + 1)]))
    prec = build_precision(total, rel_lambda=1e-2)
    phi = train.reshape(-1, 10)
    lam = 1e-2 * float((phi * phi).sum()) / 80
    assert prec.n_rows == 80 and abs(prec.lam - lam) < 1e-12 * lam
    assert rel_err(prec.score(pool), posterior_variance(pool, train, lam)) < 1e-10
    psi = prec.whiten(pool)  # ‖ψ‖² summed over rows is the PV
    assert rel_err(psi.square().sum((1, 2)), prec.score(pool)) < 1e-12
    vec = prec.whiten_vectors(pool.reshape(8, 20))  # two stacked p-blocks
    assert torch.allclose(vec, psi.reshape(8, 20), rtol=0, atol=1e-14)


def _batches(seed: int, n_batches: int, p: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(torch.randint(1, 9, (1,), generator=g)), 3, p, generator=g)
            for _ in range(n_batches)]


@dataclass
class ThreadComm(Comm):
    """W ranks as W threads of one process: all_gather through a shared slot list and a barrier."""

    slots: List[Any] = field(default_factory=list)
    barrier: Any = None

    @property
    def active(self) -> bool:
        return True

    def all_gather(self, obj):
        self.slots[self.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before every rank has read it
        return out


def _run_ranks(world: int, fn):
    """fn(comm) on W threads; returns each rank's result."""
    slots, barrier, results = [None] * world, threading.Barrier(world, timeout=60), [None] * world

    def run(r):
        results[r] = fn(ThreadComm(r, world, slots, barrier))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("world", [2, 3, 5])
def test_gram_sum_bitwise_identical_for_any_world_size(world):
    """The production Gram sum (ordered_sum of GramPartial): every rank gets the one-process total."""
    batches = _batches(11, 13, 24)
    single = ordered_sum(Comm(), len(batches), lambda b: gram_partial(batches[b]))
    evaluated = []

    def rank_sum(comm):
        def partial_of(b):
            evaluated.append((b, comm.rank))
            return gram_partial(batches[b])
        return ordered_sum(comm, len(batches), partial_of)

    for total in _run_ranks(world, rank_sum):
        assert torch.equal(total.gram, single.gram) and total.n_rows == single.n_rows
    assert sorted(evaluated) == [(b, b % world) for b in range(len(batches))]  # each batch once, on rank b mod W
    manual = gram_partial(batches[0]).gram.clone()  # the same sequential fold written out by hand
    for rows in batches[1:]:
        manual = manual + gram_partial(rows).gram
    assert torch.equal(manual, single.gram)
    # a different order of the same additions is not bitwise the same: the test above can fail
    shuffled = gram_partial(batches[-1]).gram.clone()
    for rows in batches[-2::-1]:
        shuffled = shuffled + gram_partial(rows).gram
    assert not torch.equal(shuffled, single.gram)


def test_gram_partials_of_different_width_refuse_to_add():
    with pytest.raises(ValueError, match="different p: 4 and 5"):
        gram_partial(torch.randn(3, 4)) + gram_partial(torch.randn(3, 5))


def test_cholesky_jitter_retry_and_failure():
    a = torch.zeros(5, 5, dtype=F64)
    a[0, 0] = 1.0  # PSD, singular: needs jitter
    chol, jitter = cholesky_with_jitter(a)
    assert jitter > 0 and torch.allclose(chol @ chol.T, a + jitter * torch.eye(5, dtype=F64))
    with pytest.raises(torch.linalg.LinAlgError, match="failed even with jitter"):
        cholesky_with_jitter(-torch.eye(5, dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        cholesky_with_jitter(torch.full((2, 2), float("nan"), dtype=F64))
    empty = build_precision(GramPartial(torch.zeros(3, 3, dtype=F64), 0))
    x = torch.randn(4, 3, dtype=F64)
    assert rel_err(empty.score(x), (x * x).sum(1)) < 1e-12


def test_float32_solve_is_close_and_float64_is_default():
    g = torch.Generator().manual_seed(21)
    train = torch.randn(200, 32, generator=g)
    pool = torch.randn(50, 32, generator=g)
    prec = build_precision(gram_partial(train))
    exact = posterior_variance(pool.double(), train.double(), prec.lam)
    assert rel_err(prec.score(pool), exact) < 1e-10
    fast = prec.score(pool, dtype=torch.float32)
    assert fast.dtype == F64 and 0 < rel_err(fast, exact) < 1e-4
    with pytest.raises(ValueError, match="dtype"):
        prec.score(pool, dtype=torch.float16)
