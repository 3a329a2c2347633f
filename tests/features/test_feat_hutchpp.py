"""Hutch++ and Hutchinson from closures; tr(J M Jᵀ) on the tiny MACE."""

import time

import torch

from hutchpp_estimators import force_matvecs, hutchinson, hutchpp, jmjt_matvec, jmjt_quadform


def _synthetic(g=6, n=30, seed=0):
    """PSD matrices with decaying spectra, zero-padded to n (graph g has n - 2g real coords)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(g, n, dtype=torch.float64)
    mats = torch.zeros(g, n, n, dtype=torch.float64)
    for i in range(g):
        k = n - 2 * i
        q, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
        lam = 0.6 ** torch.arange(k, dtype=torch.float64)
        mats[i, :k, :k] = (q * lam) @ q.T
        mask[i, :k] = 1
    return mats, mask


def _rms_rel(est, exact):
    return (((est - exact) / exact) ** 2).mean().sqrt().item()


def test_hutchpp_beats_hutchinson_at_equal_matvecs_synthetic():
    mats, mask = _synthetic()
    exact = torch.diagonal(mats, dim1=1, dim2=2).sum(-1)
    mv = lambda u: mats @ u  # noqa: E731
    quad = lambda v: (v * (mats @ v)).sum(1)  # noqa: E731
    hpp = torch.stack([hutchpp(mv, mask, 12, seed=s) for s in range(20)])
    hut = torch.stack([hutchinson(quad, mask, 12, seed=s) for s in range(20)])
    assert _rms_rel(hpp, exact) < 0.5 * _rms_rel(hut, exact)
    for est in (hpp, hut):  # both unbiased: mean over seeds within 3 standard errors
        assert torch.all((est.mean(0) - exact).abs() < 3 * est.std(0) / len(est) ** 0.5)


def test_hutchpp_exact_for_low_rank():
    gen = torch.Generator().manual_seed(1)
    b = torch.randn(3, 20, 2, generator=gen, dtype=torch.float64)
    mats = b @ b.transpose(1, 2)  # rank 2
    mask = torch.ones(3, 20, dtype=torch.float64)
    est = hutchpp(lambda u: mats @ u, mask, 9, seed=0)  # 3 range vectors ≥ rank
    assert torch.allclose(est, torch.diagonal(mats, dim1=1, dim2=2).sum(-1), rtol=1e-10)


def test_force_operators_match_exact_rows(model, batch, exact_J):
    ops = force_matvecs(model, batch, "readouts")
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(8, exact_J.shape[1], generator=gen, dtype=torch.float64) * ops.mask
    w = torch.randn(8, ops.p, generator=gen, dtype=torch.float64)
    assert (ops.jt(u) - torch.einsum("gr,grp->gp", u, exact_J)).abs().max() < 1e-10
    assert (ops.j(w) - torch.einsum("grp,gp->gr", exact_J, w)).abs().max() < 1e-10


def test_hutchpp_lower_error_than_probes_at_equal_measured_cost(model, batch, exact_J):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(152, 152, generator=gen, dtype=torch.float64)
    metric = a @ a.T / 152 + 0.1 * torch.eye(152)
    exact = torch.einsum("grp,pq,grq->g", exact_J, metric, exact_J)
    ops = force_matvecs(model, batch, "readouts")
    mv, quad = jmjt_matvec(ops, metric), jmjt_quadform(ops, metric)
    m, seeds = 6, range(4)
    t0 = time.perf_counter()
    hpp = torch.stack([hutchpp(mv, ops.mask, m, seed=s) for s in seeds])
    t_hpp = (time.perf_counter() - t0) / len(seeds)
    t0 = time.perf_counter()
    hutchinson(quad, ops.mask, 8, seed=99)
    t_probe = (time.perf_counter() - t0) / 8
    k = max(m, round(t_hpp / t_probe))  # probes affordable at Hutch++'s measured cost
    hut = torch.stack([hutchinson(quad, ops.mask, k, seed=100 + s) for s in seeds])
    e_hpp, e_hut = _rms_rel(hpp, exact), _rms_rel(hut, exact)
    print(f"hutch++ m={m}: {e_hpp:.3g}; probes k={k}: {e_hut:.3g}")
    assert e_hpp < e_hut, (e_hpp, e_hut, k)
