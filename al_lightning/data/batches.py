"""Batches of consecutive ids dealt to ranks: the one rank-striding sampler (docs/design.md §6).

Every loader that shards across ranks — evaluation splits, the statistics pass, the acquisition
passes — uses :class:`ShardBatches`: the ids are cut into batches (a fixed count, or an atom
budget), batch b goes to rank b mod W, nothing is padded or repeated. Training uses torch's
DistributedSampler (a seeded shuffle, padded so every rank takes the same number of steps).
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler


def fixed_batches(ids: Sequence[int], batch_size: int) -> List[np.ndarray]:
    """Consecutive ids cut into batches of ``batch_size`` (the last may be shorter)."""
    ids = np.asarray(ids, dtype=np.int64)
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def atom_batches(ids: Sequence[int], atoms: Sequence[int], budget: int) -> List[np.ndarray]:
    """Consecutive ids cut into batches of at most ``budget`` atoms (``atoms[k]``: atoms of ``ids[k]``);
    a structure larger than the budget is a batch of its own. Depends only on the ids and counts,
    so every rank and every world size cuts the same batches."""
    ids, atoms = np.asarray(ids, dtype=np.int64), np.asarray(atoms, dtype=np.int64)
    if ids.shape != atoms.shape:
        raise ValueError(f"{len(ids)} ids but {len(atoms)} atom counts")
    if budget < 1:
        raise ValueError(f"atom budget must be >= 1, got {budget}")
    batches, start, used = [], 0, 0
    for k, n in enumerate(atoms.tolist()):
        if k > start and used + n > budget:
            batches.append(ids[start:k])
            start, used = k, 0
        used += n
    if start < len(ids):
        batches.append(ids[start:])
    return batches


class ShardBatches(Sampler[List[int]]):
    """Batch sampler: ``ids`` cut into batches of consecutive ids — ``batch_size`` each, or, with
    ``atoms`` (atoms per id) and ``atom_budget``, at most that many atoms each; this rank yields
    batches rank, rank + W, … (disjoint across ranks, covering, never padded), from its
    ``start``-th batch on (a resumed pass).

    torch's BatchSampler over a DistributedSampler would deal out ids, not batches, and pad;
    batches cut the same way on every rank are what keeps 1 and N processes bitwise identical."""

    def __init__(self, ids: Sequence[int], batch_size: int, rank: int = 0, world: int = 1,
                 atoms: Optional[Sequence[int]] = None, atom_budget: Optional[int] = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batches = fixed_batches(ids, batch_size) if atom_budget is None else atom_batches(ids, atoms, atom_budget)
        self.mine = list(range(rank, len(self.batches), world))
        self.start = 0

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self.batches[b].tolist() for b in self.mine[self.start:])

    def __len__(self) -> int:
        return len(self.mine) - self.start

    @property
    def ids(self) -> List[int]:
        """The ids this rank's batches cover, in order."""
        return [int(i) for b in self.mine for i in self.batches[b]]
