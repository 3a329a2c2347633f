"""The few collectives acquisition needs (docs/design.md §6), behind one small interface.

Only p×p sums, top-K candidates and the selection cross ranks. :class:`Comm` wraps
``torch.distributed`` (any backend: gloo on CPU, NCCL on GPUs) and degrades to no-ops in
one process, so strategies run unchanged inside Lightning, in plain scripts and in tests.
Every method is a collective: every rank must call it, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass
class Comm:
    """Rank / world size and object collectives (no-ops when ``world == 1``)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_trainer(cls, trainer) -> "Comm":
        return cls(int(trainer.global_rank), int(trainer.world_size))

    @property
    def active(self) -> bool:
        return self.world > 1 and dist.is_available() and dist.is_initialized()

    def all_gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def ordered_sum(comm: Comm, n_batches: int, partial_of) -> Any:
    """Σ_b partial_of(b) folded in increasing b, bitwise identical for any world size.

    ``partial_of(b)`` is evaluated on rank ``b mod W`` only; in step j the W partials of
    batches jW … jW+W−1 are all-gathered and folded in batch order on every rank, so memory
    is O(W · |partial|). Partials must support ``+`` (tensors, GramPartial via a fold fn).
    """
    total = None
    for start in range(0, n_batches, comm.world):
        b = start + comm.rank
        mine = partial_of(b) if b < n_batches else None
        for part in comm.all_gather(mine):
            if part is not None:
                total = part if total is None else total + part
    return total


def to_cpu(x: Any) -> Any:
    """Tensors (also inside tuples / lists / dicts / dataclasses such as TopK) moved to CPU, for
    object collectives (a pickled CUDA tensor would be unpickled on the sender's GPU)."""
    import dataclasses

    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.replace(x, **{f.name: to_cpu(getattr(x, f.name)) for f in dataclasses.fields(x)})
    if isinstance(x, (list, tuple)):
        return type(x)(to_cpu(v) for v in x)
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    return x
