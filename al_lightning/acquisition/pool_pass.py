"""The feature passes of posterior-variance acquisition besides the pool (docs/design.md §2, §6).

* :func:`training_side` — rows of the labeled set in fixed batches (batch b on rank b mod W)
  through the module's ``predict_step``; p×p float64 Gram partials folded in batch order
  (bitwise the same for any world size) → :class:`~al_lightning.acquisition.posterior.Precision`
  on the acquisition device, plus the labeled set's LCMD vectors (training centres).
* :func:`split_calibration` — PV and the actual per-structure force error on a test split.
* :class:`LogHistogram` — the pool's PV distribution, filled from the scores the top-K sees.

The pool pass itself is the engine's (:mod:`al_lightning.acquisition.callback`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from al_lightning import keys as K
from al_lightning.acquisition.distributed import Comm, ordered_sum, to_cpu
from al_lightning.acquisition.posterior import GramPartial, Precision, build_precision, gram_partial
from al_lightning.acquisition.predict import predict_batches
from al_lightning.data.batches import ShardBatches
from al_lightning.features import FeatureMap
from al_lightning.model.metrics import free_atom_mean


@dataclass
class _TrainPart:
    """Partial Gram of some batches with their LCMD vectors, in batch order (CPU, float64)."""

    gram: GramPartial
    lcmd: Tensor

    def __add__(self, other: "_TrainPart") -> "_TrainPart":
        return _TrainPart(self.gram + other.gram, torch.cat([self.lcmd, other.lcmd]))


def training_side(ctx, spec: FeatureMap, rel_lambda: float, batch_size: int
                  ) -> Tuple[Precision, Tensor, GramPartial]:
    """(Precision on ``ctx.device``, LCMD vectors (n_T, d) float64 on ``ctx.device``, the Gram),
    the same on every rank. Partials cross ranks on the CPU (object collectives)."""
    dataset = ctx.datamodule.labeled_dataset()
    if len(dataset) == 0:
        raise ValueError("posterior variance needs a labeled set: the initial split is empty")
    sampler = ShardBatches(np.arange(len(dataset)), batch_size, ctx.comm.rank, ctx.comm.world)
    mine = predict_batches(ctx, dataset, sampler, spec)

    def partial_of(b: int) -> _TrainPart:  # called for this rank's batches, in order
        _, rows = next(mine)
        return _TrainPart(to_cpu(gram_partial(rows.rows)), rows.lcmd.to(torch.float64).cpu())

    total = ordered_sum(ctx.comm, len(sampler.batches), partial_of)
    return build_precision(total.gram, rel_lambda=rel_lambda).to(ctx.device), total.lcmd.to(ctx.device), total.gram


def split_calibration(ctx, split: str, spec: FeatureMap, precision: Precision, batch_size: int,
                      score_dtype: torch.dtype = torch.float64) -> Tuple[np.ndarray, np.ndarray]:
    """(PV, force MAE on free atoms) per structure of a labeled split, gathered by id order."""
    dataset = ctx.datamodule.split_dataset(split)
    sampler = ShardBatches(np.arange(len(dataset)), batch_size, ctx.comm.rank, ctx.comm.world)
    out = []
    for idx, (batch, rows) in zip(sampler, predict_batches(ctx, dataset, sampler, spec)):
        err = free_atom_mean((rows.forces - batch[K.FORCES]).abs().mean(dim=1), batch)
        out.append((np.asarray(idx), precision.score(rows.rows, dtype=score_dtype).cpu().numpy(), to_cpu(err).numpy()))
    parts = [p for rank_parts in ctx.comm.all_gather(out) for p in rank_parts]
    if not parts:
        return np.array([]), np.array([])
    order = np.argsort(np.concatenate([p[0] for p in parts]))
    return np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order]


class LogHistogram:
    """Counts of log10(score) in fixed bins (mergeable across ranks)."""

    def __init__(self, lo: float = -12.0, hi: float = 4.0, bins: int = 64) -> None:
        self.edges = np.linspace(lo, hi, bins + 1)
        self.counts = np.zeros(bins, dtype=np.int64)

    def add(self, scores: Tensor) -> None:
        x = np.log10(np.clip(scores.detach().cpu().numpy(), 10 ** self.edges[0], 10 ** self.edges[-1]))
        self.counts += np.histogram(x, self.edges)[0]

    def merged(self, comm: Comm) -> np.ndarray:
        return np.sum(comm.all_gather(self.counts), axis=0)

    def median(self, counts: np.ndarray) -> float:
        """Approximate median score (bin centre) of the counted scores."""
        if counts.sum() == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(counts), counts.sum() / 2))
        return float(10 ** (0.5 * (self.edges[i] + self.edges[i + 1])))
