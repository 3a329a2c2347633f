"""Committee baselines (docs/design.md §4): ``committee_e`` (energy) and ``committee_f`` (forces).

M members are copies of the fitted model whose readouts are re-initialised with different
seeds and which are fine-tuned on bootstrap resamples of the labeled set (members
fine-tuned from one model barely differ otherwise). Scores: the std over members of the
per-atom energy, or the mean over free atoms of the per-atom force-vector std
√(Σ_c Var_c). Every rank trains the same members (seeded, deterministic), scores its pool
shard in the engine's pool pass, and the per-rank top-B lists are merged: the same ids for any world size.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any, ClassVar, Dict, List

import numpy as np
import torch

from al_lightning import keys as K
from al_lightning.acquisition.distributed import fixed_batches
from al_lightning.acquisition.strategies import AcquisitionContext, PoolScorer, Strategy
from al_lightning.acquisition.topk import TopK
from al_lightning.model.loss import energy_force_loss


class CommitteeStrategy(Strategy):
    """Top-B committee disagreement. ``target``: "energy" or "forces"."""

    aliases: ClassVar[Dict[str, Dict[str, Any]]] = {"committee_e": {"target": "energy"},
                                                     "committee_f": {"target": "forces"}}

    def __init__(self, target: str = "forces", members: int = 3, epochs: int = 10, lr: float = 5e-3,
                 batch_size: int = 8, reinit: str = "readouts.*", bootstrap: bool = True) -> None:
        if target not in ("energy", "forces"):
            raise ValueError(f"committee target must be 'energy' or 'forces', got {target!r}")
        if members < 2:
            raise ValueError(f"committee needs members >= 2, got {members}")
        if epochs < 0 or lr <= 0 or batch_size < 1:
            raise ValueError("committee epochs must be >= 0, lr > 0, batch_size >= 1")
        self.target, self.name = target, f"committee_{target[0]}"
        self.members, self.epochs, self.lr, self.batch_size = members, epochs, lr, batch_size
        self.reinit, self.bootstrap = reinit, bootstrap

    def train_member(self, ctx: AcquisitionContext, m: int) -> torch.nn.Module:
        """Member m: readouts re-initialised with seed (seed, round, m), fine-tuned on a bootstrap."""
        net = copy.deepcopy(ctx.module.net).to(ctx.device)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([ctx.seed, ctx.round, m]).generate_state(1)[0]))
        with torch.no_grad():
            for name, p in net.named_parameters():
                if fnmatch.fnmatchcase(name, self.reinit):
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))
        data = ctx.datamodule.labeled_dataset()
        rng = np.random.default_rng([ctx.seed, ctx.round, m])
        order = rng.integers(0, len(data), len(data)) if self.bootstrap else np.arange(len(data))
        hp = ctx.module.hparams
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=self.lr)
        net.train()
        from tqdm.auto import tqdm

        bar = tqdm(range(self.epochs), desc=f"committee member {m + 1}/{self.members}", unit="epoch", leave=False,
                   disable=getattr(ctx.comm, "rank", 0) != 0)
        for _ in bar:
            for idx in fixed_batches(rng.permutation(order), self.batch_size):
                batch = next(iter(ctx.datamodule.batch_loader(data, [idx.tolist()]))).to(ctx.device)
                out = net(batch.to_dict(), training=True, compute_force=True)
                loss = energy_force_loss(out["energy"], batch[K.ENERGY], out["forces"], batch[K.FORCES],
                                         batch[K.NUM_ATOMS], batch[K.BATCH], batch[K.FREE_MASK],
                                         batch[K.ENERGY_WEIGHT], batch[K.FORCES_WEIGHT], float(hp.energy_weight),
                                         float(hp.forces_weight), hp.loss, hp.huber_delta)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        return net

    def scores(self, nets: List[torch.nn.Module], batch) -> torch.Tensor:
        """(G,) disagreement of the members on one batch."""
        outs = [net(batch.to_dict(), training=False, compute_force=True) for net in nets]
        if self.target == "energy":
            e = torch.stack([o["energy"].detach() for o in outs]) / batch[K.NUM_ATOMS]
            return e.std(dim=0, unbiased=False)
        f = torch.stack([o["forces"].detach() for o in outs])  # (M, N, 3)
        per_atom = f.var(dim=0, unbiased=False).sum(dim=1).sqrt() * batch[K.FREE_MASK]
        n = batch[K.NUM_ATOMS].numel()
        tot = torch.zeros(n, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, batch[K.BATCH], per_atom)
        cnt = torch.zeros_like(tot).index_add_(0, batch[K.BATCH], batch[K.FREE_MASK].to(tot.dtype))
        return tot / cnt.clamp_min(1)

    def plan(self, ctx: AcquisitionContext) -> "CommitteeScorer":
        """Every rank trains the same M members (seeded); the pool pass scores their disagreement."""
        if ctx.budget > len(ctx.candidates):
            raise ValueError(f"budget {ctx.budget} is larger than the {len(ctx.candidates)} pool candidates left")
        return CommitteeScorer(self, [self.train_member(ctx, m) for m in range(self.members)], ctx.budget)


class CommitteeScorer(PoolScorer):
    """Pool side of :class:`CommitteeStrategy`: plain predictions (``spec`` None), members' spread."""

    def __init__(self, strategy: CommitteeStrategy, nets: List[torch.nn.Module], k: int) -> None:
        self.strategy, self.nets, self.k, self.batch_size = strategy, nets, k, strategy.batch_size

    def score(self, batch, out):
        return self.strategy.scores(self.nets, batch).double(), batch[K.STRUCTURE_ID], None

    def choose(self, top: TopK, budget: int) -> np.ndarray:
        return top.ids[:budget].cpu().numpy().astype(np.int64)

    def diagnostics(self, ctx: AcquisitionContext, top: TopK, ids: np.ndarray) -> Dict[str, Any]:
        name = self.strategy.name
        return {"scalars": {f"{name}/threshold": float(top.scores.min())},
                "histograms": {f"{name}/selected": top.scores.cpu().numpy()}}
