"""Selectors over a merged shortlist (acquisition/selectors.py): top-B, LCMD, shortlist + LCMD, balanced."""

import numpy as np
import pytest
import torch

from al_lightning.acquisition import LCMD, ShortlistLCMD, TopB, TopK, build_selector, rank_order
from al_lightning.acquisition.selectors import BalancedLCMD


def two_clusters(n_a: int = 40, n_b: int = 40, d: int = 6, seed: int = 0) -> TopK:
    """Cluster A (ids 0..n_a-1) scores high, cluster B (far away) scores low; best first."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_a, d, generator=g, dtype=torch.float64)
    b = torch.randn(n_b, d, generator=g, dtype=torch.float64) + 25.0
    scores = torch.cat([1.0 + torch.rand(n_a, generator=g, dtype=torch.float64),
                        torch.rand(n_b, generator=g, dtype=torch.float64)])
    ids = torch.arange(n_a + n_b)
    order = rank_order(scores, ids)
    return TopK(scores[order], ids[order], torch.cat([a, b])[order].float())


def test_top_b_and_shortlist_size_rules():
    top = two_clusters()
    assert TopB().choose(top, 5).tolist() == top.ids[:5].tolist()
    assert ShortlistLCMD(0.06).shortlist_size(1000, 30) == 60 and ShortlistLCMD(0.01).shortlist_size(1000, 30) == 30
    assert ShortlistLCMD(500).shortlist_size(200, 30) == 200 and LCMD().shortlist_size(200, 30) == 200
    with pytest.raises(ValueError, match="shortlist K=3 is smaller than the budget B=5"):
        ShortlistLCMD(3).check(5, 100)


def test_balanced_spans_the_shortlist_and_the_rest_of_the_pool():
    top, budget = two_clusters(), 8
    only_short = ShortlistLCMD(30).choose(TopK(top.scores[:30], top.ids[:30], top.vectors[:30]), budget)
    assert (only_short < 40).all()  # the PV shortlist is cluster A
    half = BalancedLCMD(shortlist=30, pool_share=0.5).choose(top, budget)
    assert len(set(half.tolist())) == budget
    assert (half[:4] < 40).all() and set(half[:4].tolist()) <= set(top.ids[:30].tolist())
    assert (half[4:] >= 40).any()  # the whole-pool part reaches the far cluster the first part left alone
    # the extremes are the two rules it mixes
    assert BalancedLCMD(shortlist=30, pool_share=0.0).choose(top, budget).tolist() == only_short.tolist()
    assert BalancedLCMD(shortlist=30, pool_share=1.0).choose(top, budget).tolist() == LCMD().choose(top, budget).tolist()


def test_balanced_treats_labeled_centres_and_its_first_part_as_labeled():
    top = two_clusters()
    centres = top.vectors[top.ids >= 40][:20].double()  # cluster B already labeled
    rule = BalancedLCMD(shortlist=30, pool_share=0.5)
    assert ((rule.choose(top, 8) >= 40).sum()) == 4  # nothing labeled: the whole-pool half goes to B
    picks = rule.choose(top, 8, centres)
    assert len(set(picks.tolist())) == 8 and (picks < 40).all()  # B is covered: every pick is in A


def test_build_selector_short_names_and_one_line_errors():
    assert isinstance(build_selector("balanced"), BalancedLCMD)
    assert build_selector({"class_path": "shortlist_lcmd", "init_args": {"shortlist": 9}}) == ShortlistLCMD(9)
    for spec, match in [("nope", "short names: \\['balanced'"), ({"class_path": "balanced", "init_args": {"pool_share": 2}},
                        "pool_share must be in \\[0, 1\\]"), ("al_lightning.features.NTKEnergy", "is not a Selector class")]:
        with pytest.raises(ValueError, match=match) as info:
            build_selector(spec)
        assert "\n" not in str(info.value)
    assert np.asarray(TopB().choose(two_clusters(), 3)).dtype == np.int64
