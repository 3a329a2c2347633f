"""The acquisition passes' predict loop (docs/design.md §6), driven from the callback.

Lightning's ``trainer.predict`` inside ``on_fit_end`` clobbers the trainer's state, its
DistributedSampler order is per-sample not per-batch, and its DDP wrapper would prepare a
backward the NTK never runs (TRAPS); so the loop is Lightning's predict loop written out: a
DataLoader with :class:`~al_lightning.data.batches.ShardBatches` (batches of consecutive ids, batch b on rank
b mod W, no padding), ``batch.to(device)`` and the module's own ``predict_step`` (autograd on,
outside inference mode). Feature rows stay on the device.
"""

from __future__ import annotations

from typing import Any, Iterator, Tuple

from torch.utils.data import Sampler



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
