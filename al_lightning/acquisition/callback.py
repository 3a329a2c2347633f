"""AcquisitionCallback: when a round's fit ends, acquire and label the next batch (docs/design.md §2).

The whole acquisition reads top to bottom here:

1. ``strategy.plan(ctx)`` — the training side (Λ of the labeled set, committee members);
2. :func:`pool_predict` — this rank's pool shard through the module's ``predict_step``
   (:mod:`~al_lightning.acquisition.predict`), each batch scored once into a running top-K,
   everything on the acquisition device (the trainer's root device: a GPU when there is one);
3. the per-rank shortlists merged on every rank (the same path for 1 and N processes);
4. ``scorer.choose`` — LCMD (or top-B) on rank 0, broadcast;
5. the labeler (the campaign's oracle and label store) labels rank 0's picks; the labels are
   broadcast and added to the datamodule.

The result (ids, labels, failures, seconds) is :attr:`AcquisitionCallback.result`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import lightning.pytorch as pl
import numpy as np
import torch

from al_lightning import console, faults
from al_lightning.acquisition.distributed import to_cpu
from al_lightning.acquisition.pass_state import PassCheckpoint
from al_lightning.acquisition.predict import predict_batches
from al_lightning.data.batches import ShardBatches
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Selection, Strategy
from al_lightning.acquisition.topk import StreamingTopK, TopK, merge_topk
from al_lightning.model.mace import on_device
from al_lightning.oracle.handoff import HandoffPending


def pool_sampler(ctx: AcquisitionContext, scorer: PoolScorer) -> ShardBatches:
    """This rank's share of the candidates' batches: by atom budget (``scorer.batch_atoms``) or fixed."""
    budget = scorer.batch_atoms
    if budget is None:
        return ShardBatches(ctx.candidates, scorer.batch_size, ctx.comm.rank, ctx.comm.world)
    atoms = ctx.datamodule.pool_atom_counts()
    if budget == "auto":
        budget = max(1, int(round(scorer.batch_size * float(atoms.mean()))))
    return ShardBatches(ctx.candidates, scorer.batch_size, ctx.comm.rank, ctx.comm.world,
                        atoms=atoms[ctx.candidates], atom_budget=int(budget))


def pool_predict(ctx: AcquisitionContext, scorer: PoolScorer, saved: Optional[Dict[str, Any]] = None
                 ) -> Tuple[TopK, List[int], Optional[int]]:
    """This rank's running top-k of the candidates (on ``ctx.device``), the pool ids it scored, and
    the batch a resumed pass continued at (``saved``: this rank's pass state; None: from the start).
    ``ctx.pass_state`` (if set) keeps the state on disk as the pass goes."""
    sampler = pool_sampler(ctx, scorer)
    top = StreamingTopK(scorer.k, vector_dtype=torch.float32)
    resumed_from = None
    if saved is not None:
        top.load_state_dict(saved["topk"], ctx.device)
        torch.set_rng_state(saved["rng"])
        sampler.start = int(saved["next"])
        resumed_from = sampler.mine[sampler.start] if sampler.start < len(sampler.mine) else len(sampler.batches)
    dm = ctx.datamodule
    pool = dm.split_dataset("pool") if scorer.labeled_pool else dm.pool_dataset()
    keep = ctx.pass_state
    for j in score_batches(ctx, pool, sampler, scorer, top):
        if keep is not None:
            keep.save(ctx.comm.rank, lambda: {"next": j + 1, "topk": top.state_dict(), "scorer": scorer.state_dict(),
                                              "rng": torch.get_rng_state()})
        faults.hit("pool")
    return top.result(), sampler.ids, resumed_from


def score_batches(ctx: AcquisitionContext, pool, sampler: ShardBatches, scorer: PoolScorer,
                  top: StreamingTopK) -> Iterator[int]:
    """Score this rank's batches (from ``sampler.start``) into ``top``; yields each finished batch's
    index in the rank's list. A CUDA out-of-memory error splits the batch's unscored structures in
    two and retries, and every later batch is split as often (said once); the top-K does not depend
    on how the pool was cut."""
    parts, done = 1, set()
    while sampler.start < len(sampler.mine):
        units = [(j, part) for j, b in enumerate(sampler.mine[sampler.start:], start=sampler.start)
                 for part in np.array_split([i for i in sampler.batches[b].tolist() if i not in done], parts) if len(part)]
        stream = predict_batches(ctx, pool, [part.tolist() for _, part in units], scorer.spec, progress="pool pass")
        try:
            for (j, part), (batch, out) in zip(units, stream):
                faults.hit("pool_batch")
                top.update(*scorer.score(batch, out))
                done.update(part.tolist())
                if done.issuperset(sampler.batches[sampler.mine[j]].tolist()):
                    done, sampler.start = set(), j + 1
                    yield j
        except torch.cuda.OutOfMemoryError as exc:
            if max(len(part) for _, part in units) <= 1:  # nothing left to split
                raise
            if parts == 1:
                console.say(f"pool pass: out of memory on {ctx.device} ({str(exc).splitlines()[0][:80]}); "
                            "splitting the pool batches and going on (a smaller batch_atoms avoids this)")
            parts *= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        finally:
            stream.close()


def merged_shortlist(ctx: AcquisitionContext, top: TopK, k: int) -> TopK:
    """Global top-k on every rank: shortlists cross ranks on the CPU and come back to the device
    (one process takes the same path, so 1 and N processes choose from identical data)."""
    merged = merge_topk(ctx.comm.all_gather(to_cpu(top)), k)
    vectors = None if merged.vectors is None else merged.vectors.to(ctx.device)
    return TopK(merged.scores.to(ctx.device), merged.ids.to(ctx.device), vectors)


def select(strategy: Strategy, ctx: AcquisitionContext) -> Selection:
    """Every rank: strategy → pool predict → top-K → choice (rank 0's ids; others get []).
    The network runs on ``ctx.device`` for the call and goes back where it was."""
    with on_device(ctx.module.net, ctx.device) if ctx.module is not None else contextlib.nullcontext():
        return _select(strategy, ctx)


def _select(strategy: Strategy, ctx: AcquisitionContext) -> Selection:
    if ctx.budget > len(ctx.candidates):  # the one check, for every strategy
        raise ValueError(f"budget {ctx.budget} is larger than the {len(ctx.candidates)} pool candidates left")
    t0 = time.perf_counter()
    saved = ctx.pass_state.load(ctx, strategy) if ctx.pass_state is not None else None  # collective
    scorer = strategy.restore(ctx, saved["scorer"]) if saved is not None else None
    if scorer is None:
        saved, scorer = None, strategy.plan(ctx)
    if scorer is None:
        return Selection(np.asarray(strategy.pick(ctx), dtype=np.int64), seconds={"select": time.perf_counter() - t0})
    t1 = time.perf_counter()
    top, shard, resumed_from = pool_predict(ctx, scorer, saved)
    merged = merged_shortlist(ctx, top, scorer.k)
    t2 = time.perf_counter()
    ids = scorer.choose(merged, ctx.budget) if ctx.comm.rank == 0 else np.empty(0, dtype=np.int64)
    t3 = time.perf_counter()
    diagnostics = scorer.diagnostics(ctx, merged, ids)
    return Selection(np.asarray(ids, dtype=np.int64), diagnostics, shard,
                     {"train": t1 - t0, "pool": t2 - t1, "select": t3 - t2}, resumed_from)


class Labeler(Protocol):
    """The campaign side of an acquisition (rank 0 only): stored selections, the oracle, the store."""

    def stored_selection(self, round_: int) -> Optional[List[int]]: ...

    def save_selection(self, round_: int, ids: List[int], diagnostics: Dict[str, Any]) -> None: ...

    def label(self, round_: int, ids: List[int]) -> Any:
        """(ids labeled, labeled Atoms, {id: error}) — or a :class:`HandoffPending` (the file hand-off)."""


@dataclass
class AcquisitionResult:
    """One acquisition: what was picked, what was labeled or failed, and the seconds spent."""

    round: int
    selected: List[int]
    labeled: List[int] = field(default_factory=list)
    failed: Dict[int, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    pass_resumed_from: Optional[int] = None  # the pool batch a resumed pass continued at
    fits: List[Dict[str, Any]] = field(default_factory=list)  # extra fits the strategy ran (committee members)
    scalars: Dict[str, float] = field(default_factory=dict)  # the strategy's diagnostics scalars


class AcquisitionCallback(pl.Callback):
    """At ``on_fit_end`` (every rank): select ``budget`` pool ids with ``strategy``, label them
    with ``labeler`` on rank 0, add the labels to the datamodule. ``labeler`` None: select only;
    ``fit``: how the strategy may fit further modules (committee members), as the main fit;
    ``pass_state``: where the pool pass keeps its resumable state (None: nowhere); ``fitted`` (set by
    the campaign): called first, on every rank, with the finished fit's trainer."""

    def __init__(self, strategy: Strategy, budget: int, round_: int, seed: int,
                 labeler: Optional[Labeler] = None, fit: Optional[Callable[..., Dict[str, Any]]] = None,
                 pass_state: Optional[PassCheckpoint] = None) -> None:
        self.strategy, self.budget, self.round, self.seed, self.labeler = strategy, budget, round_, seed, labeler
        self.fit, self.pass_state = fit, pass_state
        self.fitted: Optional[Callable[[pl.Trainer], None]] = None  # the campaign keeps the finished fit
        self.result: Optional[AcquisitionResult] = None
        self.selection: Optional[Selection] = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fitted is not None:  # before anything is acquired: a crash from here on keeps the fit
            self.fitted(trainer)
        dm = trainer.datamodule
        t0 = time.perf_counter()
        stored = self.labeler.stored_selection(self.round) if self.labeler is not None else None
        ids = stored if stored is not None else self._select(trainer, pl_module, dm)
        t1 = time.perf_counter()
        diagnostics = self.selection.diagnostics if self.selection else {}
        self.result = AcquisitionResult(self.round, ids, resumed=stored is not None,
                                        pass_resumed_from=self.selection.resumed_from if self.selection else None,
                                        fits=list(diagnostics.get("members", [])),
                                        scalars=dict(diagnostics.get("scalars", {})))
        self.result.seconds = {"acquire": t1 - t0, **(self.selection.seconds if self.selection else {})}
        if self.labeler is not None:
            self._label(trainer, dm, ids)
            self.result.seconds["label"] = time.perf_counter() - t1
        trainer.strategy.barrier()

    def _select(self, trainer: pl.Trainer, module, dm) -> List[int]:
        ctx = AcquisitionContext.from_trainer(trainer, module=module, datamodule=dm, round=self.round,
                                              seed=self.seed, budget=self.budget, candidates=dm.candidate_ids(),
                                              fit=self.fit, pass_state=self.pass_state)
        self.selection = select(self.strategy, ctx)  # on the root device (teardown left the net on the CPU)
        ids = [int(i) for i in trainer.strategy.broadcast(self.selection.ids, src=0)]
        if trainer.is_global_zero and self.labeler is not None:
            self.labeler.save_selection(self.round, ids, self.selection.diagnostics)
        trainer.strategy.barrier()  # the selection is stored: the pass state is not needed any more
        if self.pass_state is not None:
            self.pass_state.clear(trainer.global_rank)
        return ids

    def _label(self, trainer: pl.Trainer, dm, ids: Sequence[int]) -> None:
        outcome = self.labeler.label(self.round, list(ids)) if trainer.is_global_zero else None
        outcome = trainer.strategy.broadcast(outcome, src=0)
        if isinstance(outcome, HandoffPending):  # broadcast to every rank: all stop the same way
            raise outcome
        done, labeled, failed = outcome
        dm.add(done, labeled)
        dm.exclude(failed)
        self.result.labeled, self.result.failed = [int(i) for i in done], dict(failed)
