"""The acquisition passes' predict loop (docs/design.md §6), driven from the callback.

Lightning's ``trainer.predict`` inside ``on_fit_end`` clobbers the trainer's state, its
DistributedSampler order is per-sample not per-batch, and its DDP wrapper would prepare a
backward the NTK never runs (TRAPS); so the loop is Lightning's predict loop written out: a
DataLoader with :class:`ShardBatches` (fixed batches of consecutive ids, batch b on rank
b mod W, no padding), ``batch.to(device)`` and the module's own ``predict_step`` (autograd on,
outside inference mode). Feature rows stay on the device.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple

from torch.utils.data import Sampler

from al_lightning.acquisition.distributed import atom_batches, fixed_batches


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


def predict_batches(ctx, dataset, sampler: Sampler, spec: Any, progress: str = "") -> Iterator[Tuple[Any, Any]]:
    """(batch on ``ctx.device``, ``ctx.module.predict_step`` output with ``spec``) per batch of
    ``sampler``, in order. ``progress``: a bar label (rank 0 only)."""
    loader = ctx.datamodule.batch_loader(dataset, sampler)
    if progress and ctx.comm.rank == 0:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=progress, total=len(sampler), leave=False, unit="batch", disable=None)  # no TTY: off
    with ctx.module.predicting_features(spec):
        for i, batch in enumerate(loader):
            batch = batch.to(ctx.device)
            yield batch, ctx.module.predict_step(batch, i)
