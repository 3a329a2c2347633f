"""Distributed feature passes for acquisition (docs/design.md §2 steps 1–4, §6).

* :func:`training_side` — rows of the labeled set in fixed batches (batch b on rank
  b mod W), p×p float64 Gram partials folded in batch order (bitwise the same for any
  world size) → :class:`~al_lightning.acquisition.posterior.Precision`, plus the labeled
  set's LCMD vectors (training centres).
* :func:`pool_shortlist` — this rank's pool batches streamed through PV scoring into a
  running top-K (at most two chunks alive), then all shortlists merged on every rank.
* :func:`split_calibration` — PV and the actual per-structure force error on a test split.

Strategies (:mod:`al_lightning.acquisition.pv`) only orchestrate these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from al_lightning import keys as K
from al_lightning.campaign import faults
from al_lightning.acquisition.distributed import Comm, fixed_batches, my_batches, ordered_sum, to_cpu
from al_lightning.acquisition.posterior import GramPartial, Precision, build_precision, gram_partial
from al_lightning.acquisition.topk import TopK, merge_topk, score_pool
from al_lightning.features import FeatureSpec, PoolRows, pool_step


@dataclass
class _TrainPart:
    """Partial Gram of some batches with their LCMD vectors, in batch order."""

    gram: Tensor
    n_rows: int
    lcmd: Tensor

    def __add__(self, other: "_TrainPart") -> "_TrainPart":
        return _TrainPart(self.gram + other.gram, self.n_rows + other.n_rows, torch.cat([self.lcmd, other.lcmd]))


@dataclass
class PassSetup:
    """What a pass needs: the network, device, loss weights and batching."""

    net: torch.nn.Module
    device: torch.device
    w_energy: float
    w_forces: float
    batch_size: int
    comm: Comm


def iter_rows(setup: PassSetup, datamodule, dataset, batches: List[np.ndarray], spec: FeatureSpec,
              progress: Optional[str] = None) -> Iterator[Tuple[object, PoolRows]]:
    """(batch on the device, PoolRows on CPU, detached) for the given index batches, in order."""
    loader = datamodule.batch_loader(dataset, [b.tolist() for b in batches])
    if progress and setup.comm.rank == 0:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=progress, total=len(batches), leave=False)
    for batch in loader:
        batch = batch.to(setup.device)
        rows = pool_step(setup.net, batch, spec, setup.w_energy, setup.w_forces)
        yield batch, PoolRows(*(t.detach().cpu() for t in rows))


def training_side(setup: PassSetup, datamodule, spec: FeatureSpec, rel_lambda: float
                  ) -> Tuple[Precision, Tensor, GramPartial]:
    """Precision of the labeled set's rows and its LCMD vectors (n_T, d), same on every rank."""
    dataset = datamodule.labeled_dataset()
    batches = fixed_batches(np.arange(len(dataset)), setup.batch_size)

    def partial_of(b: int) -> _TrainPart:
        _, rows = next(iter_rows(setup, datamodule, dataset, [batches[b]], spec))
        part = gram_partial(rows.rows)
        return _TrainPart(part.gram, part.n_rows, rows.lcmd.to(torch.float64))

    total = ordered_sum(setup.comm, len(batches), partial_of)
    gram = GramPartial(gram=total.gram, n_rows=total.n_rows)
    return build_precision(gram, rel_lambda=rel_lambda), total.lcmd, gram


def pool_shortlist(setup: PassSetup, datamodule, candidates: np.ndarray, spec: FeatureSpec,
                   precision: Precision, k: int, lcmd_space: str, histogram: "LogHistogram"
                   ) -> Tuple[TopK, List[int]]:
    """Global top-k (score, id, LCMD vector) of the candidates; also this rank's pool ids."""
    batches = fixed_batches(candidates, setup.batch_size)
    mine = [batches[b] for b in my_batches(len(batches), setup.comm)]

    def chunks():
        for _, rows in iter_rows(setup, datamodule, datamodule.pool_dataset(), mine, spec, progress="pool pass"):
            histogram.add(precision.score(rows.rows))
            faults.hit("pool")
            yield rows.ids, rows.rows, rows.lcmd

    top = score_pool(chunks(), precision, k, lcmd_space=lcmd_space, vector_dtype=torch.float32)
    shortlists = setup.comm.all_gather(to_cpu(top))
    seen = [int(i) for b in mine for i in b]
    return merge_topk(shortlists, k), seen


def split_calibration(setup: PassSetup, datamodule, split: str, spec: FeatureSpec,
                      precision: Precision) -> Tuple[np.ndarray, np.ndarray]:
    """(PV, force MAE on free atoms) per structure of a labeled split, gathered by id order."""
    dataset = datamodule.split_dataset(split)
    batches = fixed_batches(np.arange(len(dataset)), setup.batch_size)
    mine = [batches[b] for b in my_batches(len(batches), setup.comm)]
    out = []
    for idx, (batch, rows) in zip(mine, iter_rows(setup, datamodule, dataset, mine, spec)):
        free = batch[K.FREE_MASK].cpu().to(rows.forces.dtype)
        graph = batch[K.BATCH].cpu()
        err = (rows.forces - batch[K.FORCES].cpu()).abs().mean(dim=1) * free
        per = torch.zeros(len(idx), dtype=err.dtype).index_add_(0, graph, err)
        n_free = torch.zeros(len(idx), dtype=err.dtype).index_add_(0, graph, free)
        out.append((idx, precision.score(rows.rows).numpy(), (per / n_free.clamp_min(1)).numpy()))
    parts = [p for rank_parts in setup.comm.all_gather(out) for p in rank_parts]
    order = np.argsort(np.concatenate([p[0] for p in parts])) if parts else np.array([], int)
    pv = np.concatenate([p[1] for p in parts])[order] if parts else np.array([])
    err = np.concatenate([p[2] for p in parts])[order] if parts else np.array([])
    return pv, err


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
