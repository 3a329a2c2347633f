"""Committee baselines (docs/design.md §4): ``committee_e`` (energy) and ``committee_f`` (forces).

M members are copies of the fitted module whose readouts are re-initialised (seed (seed, round,
m)) and which are then fitted exactly as the main model is: the same MACEModule (loss,
optimizer, scheduler, EMA) through a Lightning Trainer with the campaign's trainer settings,
early stopping and best-weights restore (``ctx.fit``, supplied by the campaign), each on its own
batch order (a datamodule view with its own seed; ``bootstrap``: also a bootstrap resample of
the labeled set). A committee campaign therefore costs M + 1 fits per round (the member fits
are in ``acquire_seconds``). Scores: the std over members of the per-atom energy, or the mean
over free atoms of the per-atom force-vector std √(Σ_c Var_c). Every rank fits the same members
(under DDP jointly, as the main model), scores its pool shard in the engine's pool pass, and the
per-rank top-B lists are merged.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any, Callable, ClassVar, Dict, List, Optional

import numpy as np
import torch

from al_lightning import keys as K
from al_lightning.model.metrics import free_atom_mean
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Strategy
from al_lightning.acquisition.topk import TopK

MemberFit = Callable[[Any, Any, int, str], Dict[str, Any]]


def member_seed(seed: int, round_: int, m: int) -> int:
    """The seed of member m in a round (its readout init, batch order and bootstrap)."""
    return int(np.random.SeedSequence([seed, round_, m]).generate_state(1)[0] % (2**31 - 1))


def detached_copy(module):
    """A deep copy of a LightningModule without its trainer (and the trainer's datamodule)."""
    trainer = getattr(module, "_trainer", None)
    return copy.deepcopy(module, memo={id(trainer): None} if trainer is not None else {})


def standalone_fit(max_epochs: int = 10) -> MemberFit:
    """Outside a campaign: a plain Trainer (CPU or the module's device), ``max_epochs`` epochs."""

    def fit(module, datamodule, seed: int, name: str) -> Dict[str, Any]:
        import lightning.pytorch as pl

        from al_lightning.model.callbacks import LossCurve

        pl.seed_everything(seed, workers=True, verbose=False)
        curve = LossCurve()
        device = next(module.net.parameters()).device
        trainer = pl.Trainer(max_epochs=max_epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                             devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, inference_mode=False, use_distributed_sampler=False,
                             num_sanity_val_steps=0, callbacks=[curve])
        trainer.fit(module, datamodule=datamodule)
        return {"name": name, "seed": seed, "epochs": int(trainer.current_epoch), "val_loss": curve.values}

    return fit


class CommitteeStrategy(Strategy):
    """Top-B committee disagreement. ``target``: "energy" or "forces".

    Args:
        members: M (>= 2). reinit: fnmatch pattern of the parameters each member redraws.
        bootstrap: fit each member on a bootstrap resample of the labeled set.
        epochs: outside a campaign, epochs per member fit (in a campaign: the campaign's trainer).
        batch_size: structures per pool batch when scoring.
    """

    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"committee_e": {"target": "energy"},
                                                     "committee_f": {"target": "forces"}}

    def __init__(self, target: str = "forces", members: int = 3, reinit: str = "readouts.*",
                 bootstrap: bool = False, epochs: int = 10, batch_size: int = 64) -> None:
        if target not in ("energy", "forces"):
            raise ValueError(f"committee target must be 'energy' or 'forces', got {target!r}")
        if members < 2:
            raise ValueError(f"committee needs members >= 2, got {members}")
        if epochs < 0 or batch_size < 1:
            raise ValueError("committee epochs must be >= 0, batch_size >= 1")
        self.target, self.name = target, f"committee_{target[0]}"
        self.members, self.epochs, self.batch_size = members, epochs, batch_size
        self.reinit, self.bootstrap = reinit, bootstrap

    def member(self, ctx: AcquisitionContext, m: int):
        """(module, datamodule view, seed) of member m: readouts redrawn, its own batch order."""
        seed = member_seed(ctx.seed, ctx.round, m)
        module = detached_copy(ctx.module)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in module.net.named_parameters():
                if fnmatch.fnmatchcase(name, self.reinit):
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
        return module, ctx.datamodule.member_view(seed, self.bootstrap), seed

    def fit_members(self, ctx: AcquisitionContext, fit: Optional[MemberFit] = None):
        """Fit the M members (``ctx.fit`` in a campaign); returns (nets in eval mode, fit records)."""
        fit = fit or ctx.fit or standalone_fit(self.epochs)
        nets, records = [], []
        for m in range(self.members):
            module, view, seed = self.member(ctx, m)
            records.append(fit(module, view, seed, f"member_{m}"))
            nets.append(module.net.to(ctx.device).eval())
        return nets, records

    def scores(self, nets: List[torch.nn.Module], batch) -> torch.Tensor:
        """(G,) disagreement of the members on one batch."""
        with torch.enable_grad():
            outs = [net(batch.to_dict(), training=False, compute_force=True) for net in nets]
        if self.target == "energy":
            e = torch.stack([o["energy"].detach() for o in outs]) / batch[K.NUM_ATOMS]
            return e.std(dim=0, unbiased=False)
        f = torch.stack([o["forces"].detach() for o in outs])  # (M, N, 3)
        return free_atom_mean(f.var(dim=0, unbiased=False).sum(dim=1).sqrt(), batch)

    def plan(self, ctx: AcquisitionContext) -> "CommitteeScorer":
        """Every rank trains the same M members (seeded); the pool pass scores their disagreement."""
        nets, records = self.fit_members(ctx)
        return CommitteeScorer(self, nets, ctx.budget, records)


class CommitteeScorer(PoolScorer):
    """Pool side of :class:`CommitteeStrategy`: plain predictions (``spec`` None), members' spread."""

    def __init__(self, strategy: CommitteeStrategy, nets: List[torch.nn.Module], k: int,
                 records: List[Dict[str, Any]]) -> None:
        self.strategy, self.nets, self.k, self.batch_size = strategy, nets, k, strategy.batch_size
        self.records = records

    def score(self, batch, out):
        return self.strategy.scores(self.nets, batch).double(), batch[K.STRUCTURE_ID], None

    def choose(self, top: TopK, budget: int) -> np.ndarray:
        return top.ids[:budget].cpu().numpy().astype(np.int64)

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        name = self.strategy.name
        scalars = {f"{name}/threshold": float(top.scores.min()),
                   f"{name}/member_epochs_mean": float(np.mean([r.get("epochs", 0) for r in self.records]))}
        return {"scalars": scalars, "histograms": {f"{name}/selected": top.scores.cpu().numpy()},
                "members": self.records}
