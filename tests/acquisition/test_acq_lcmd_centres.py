"""Regression: LCMD with more training centres than shortlist points (a campaign's later
rounds) — speculative look-ahead must give the plain rule's picks."""

import torch

from al_lightning.acquisition.lcmd import select_lcmd


def test_more_training_centres_than_pool_points():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(30, 5, generator=g, dtype=torch.float64)
    train = torch.randn(40, 5, generator=g, dtype=torch.float64)
    fast = select_lcmd(pool, 8, train)
    plain = select_lcmd(pool, 8, train, lookahead=1)
    assert torch.equal(fast, plain) and len(set(fast.tolist())) == 8
