"""The campaign loop (DESIGN §2): R acquisitions, R + 1 fits.

Round r = fit on the labeled set → (``AcquisitionCallback.on_fit_end``: strategy picks B
pool ids, rank 0's oracle labels them, labels are written to disk, broadcast, added) →
evaluate every test split → record. The last round acquires nothing, so every label bought
is trained on. Every rank runs this loop (Lightning's DDP launcher re-executes the
script); files are written by rank 0 only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import lightning.pytorch as pl
import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger

from al_lightning.acquisition.callback import AcquisitionCallback
from al_lightning.acquisition.strategies import STRATEGIES, AcquisitionContext, make_strategy
from al_lightning.campaign import outputs
from al_lightning.data.io import write_extxyz
from al_lightning.model.metrics import split_metrics
from al_lightning.oracle import make_oracle


@dataclass
class CampaignConfig:
    """Campaign settings (``campaign.*`` in YAML).

    rounds: number of acquisitions R (R + 1 fits); 0 = a plain fit + test evaluation.
    budget: structures acquired per round (B). strategy: DESIGN §5 name.
    oracle: ``"stored"`` (labels in the pool file) or an ASE calculator import path.
    warm_start: each fit starts from the previous round's weights (else the initial ones).
    campaign_dir: output folder (default ``logs/<name>``).
    """

    name: str = "campaign"
    campaign_dir: Optional[str] = None
    rounds: int = 0
    budget: int = 10
    strategy: str = "random"
    strategy_kwargs: Dict[str, Any] = field(default_factory=dict)
    oracle: str = "stored"
    oracle_kwargs: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    warm_start: bool = True
    export_models: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"campaign.rounds must be >= 0, got {self.rounds}")
        if self.budget < 1:
            raise ValueError(f"campaign.budget must be >= 1, got {self.budget}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"campaign strategy {self.strategy!r} unknown; available: {sorted(STRATEGIES)}")
        if not self.name or "/" in self.name:
            raise ValueError(f"campaign.name must be a non-empty folder name, got {self.name!r}")

    @property
    def directory(self) -> Path:
        return Path(self.campaign_dir or Path("logs") / self.name).expanduser().resolve()


TrainerFactory = Callable[[int, TensorBoardLogger, List[pl.Callback]], pl.Trainer]


def default_trainer_factory(**trainer_kwargs: Any) -> TrainerFactory:
    """Factory of per-round Trainers (TRAPS: a second fit on one Trainer returns at once)."""

    def make(round_: int, logger: TensorBoardLogger, callbacks: List[pl.Callback]) -> pl.Trainer:
        kw = dict(trainer_kwargs)
        kw["callbacks"] = list(kw.get("callbacks") or []) + callbacks
        kw.update(logger=logger, inference_mode=False, use_distributed_sampler=False)
        kw.setdefault("enable_checkpointing", False)
        kw.setdefault("num_sanity_val_steps", 0)
        return pl.Trainer(**kw)

    return make


class Campaign:
    """Runs and records one campaign. ``run()`` returns the campaign state (campaign.json)."""

    def __init__(self, cfg: CampaignConfig, module, datamodule, make_trainer: TrainerFactory,
                 config_dump: Optional[str] = None) -> None:
        self.cfg, self.module, self.dm, self.make_trainer = cfg, module, datamodule, make_trainer
        self.dir = cfg.directory
        self.strategy = make_strategy(cfg.strategy, **cfg.strategy_kwargs)
        self._oracle = None
        self.config_dump = config_dump
        self.state: Dict[str, Any] = {"name": cfg.name, "config": asdict(cfg), "status": "running",
                                      "rounds": [], "failed": []}
        self.selected: List[int] = []

    @property
    def is_zero(self) -> bool:
        return rank_zero_only.rank == 0

    @property
    def oracle(self):
        if self._oracle is None:
            self._oracle = make_oracle(self.cfg.oracle, self.cfg.oracle_kwargs, self.dm)
        return self._oracle

    # ------------------------------------------------------------------ loop
    def run(self) -> Dict[str, Any]:
        self.dm.prepare_data()
        self.dm.setup("fit")
        self.module.build(self.dm)
        if self.cfg.rounds > 0 and self.cfg.budget * self.cfg.rounds > len(self.dm.candidate_ids()):
            raise ValueError(f"campaign needs {self.cfg.budget * self.cfg.rounds} pool structures "
                             f"(budget {self.cfg.budget} x rounds {self.cfg.rounds}) but the pool has "
                             f"{len(self.dm.candidate_ids())} candidates")
        if self.is_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.config_dump:
                (self.dir / "config.yaml").write_text(self.config_dump)
        for r in range(self.cfg.rounds + 1):
            self.run_round(r)
        self.state["status"] = "complete"
        self._write_state()
        return self.state

    def run_round(self, r: int) -> None:
        self.dm.round = r
        if r > 0 and not self.cfg.warm_start:
            self.module.reset_weights()
        n_labeled = len(self.dm.labeled_structures())
        self.selected, self.acquire_seconds = [], 0.0
        logger = TensorBoardLogger(save_dir=str(self.dir), name="tb", version=f"round_{r:03d}")
        trainer = self.make_trainer(r, logger, [AcquisitionCallback(self)])
        t0 = time.perf_counter()
        trainer.fit(self.module, datamodule=self.dm)
        t_fit = time.perf_counter() - t0
        val = split_metrics(trainer.callback_metrics, ["val"])
        trainer.test(self.module, datamodule=self.dm, verbose=False)
        metrics = {**val, **split_metrics(trainer.callback_metrics, self.dm.test_splits)}
        record = {"round": r, "n_labeled": n_labeled, "selected_ids": [int(i) for i in self.selected],
                  "metrics": metrics, "fit_seconds": round(t_fit, 2),
                  "acquire_seconds": round(self.acquire_seconds, 2)}
        self.state["rounds"].append(record)
        if self.is_zero:
            self._write_round_outputs(r, record)

    # ------------------------------------------------------------------ acquisition
    def acquire(self, trainer: pl.Trainer, module) -> None:
        """Called by :class:`AcquisitionCallback` at fit end, on every rank."""
        r = self.dm.round
        if r >= self.cfg.rounds:
            return
        ctx = AcquisitionContext.from_trainer(trainer, module=module, datamodule=self.dm, round=r,
                                              seed=self.cfg.seed, budget=self.cfg.budget,
                                              candidates=self.dm.candidate_ids())
        t0 = time.perf_counter()
        ids = np.asarray(trainer.strategy.broadcast(self.strategy.select(ctx), src=0), dtype=np.int64)
        self.acquire_seconds = time.perf_counter() - t0
        if trainer.is_global_zero:
            outputs.log_diagnostics(self.dir / "tb" / "rounds", r, getattr(self.strategy, "diagnostics", {}))
        labeled = None
        if trainer.is_global_zero:
            labeled = self._label(r, ids)
        labeled = trainer.strategy.broadcast(labeled, src=0)
        self.dm.add(ids.tolist(), labeled)
        self.selected = ids.tolist()
        trainer.strategy.barrier()

    def _label(self, r: int, ids: np.ndarray) -> list:
        """Rank 0: oracle labels → written to disk (atomic) before anyone uses them."""
        from tqdm.auto import tqdm

        pool = self.dm.pool_dataset()
        structures = [pool.get_atoms(int(i))[1] for i in ids]
        labeled = []
        log_path = self.dir / "oracle_calls.jsonl"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            for i, atoms in tqdm(list(zip(ids, structures)), desc=f"labeling round {r}", leave=False):
                out = self.oracle.label([int(i)], [atoms])[0]
                out.info["pool_id"] = int(i)
                labeled.append(out)
                log.write(json.dumps({"round": r, "id": int(i), "oracle": self.cfg.oracle}) + "\n")
                log.flush()
        write_extxyz(self.dir / "labels" / f"round_{r:03d}.extxyz", labeled)
        return labeled

    # ------------------------------------------------------------------ outputs
    def _write_round_outputs(self, r: int, record: dict) -> None:
        rdir = self.dir / f"round_{r:03d}"
        outputs.write_json(rdir / "selected_ids.json", record["selected_ids"])
        outputs.write_json(rdir / "metrics.json", record["metrics"])
        write_extxyz(rdir / "labeled.extxyz", self.dm.labeled_structures()[: record["n_labeled"]])
        if self.cfg.export_models:
            outputs.export_model(self.module.net, rdir / "model.model")
        outputs.log_round_metrics(self.dir / "tb" / "rounds", r, record["n_labeled"], record["metrics"])
        self._write_state()

    def _write_state(self) -> None:
        if not self.is_zero:
            return
        outputs.write_json(self.dir / "campaign.json", self.state)
        if self.state["rounds"]:
            outputs.plot_learning_curves(self.state["rounds"], self.dir / "learning_curve.png")
            outputs.write_report(self.state, self.dir / "report.md")

