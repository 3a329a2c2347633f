"""The campaign loop (docs/design.md §2): R acquisitions, R + 1 fits.

Round r = fit on the labeled set → (``AcquisitionCallback.on_fit_end``: strategy picks B
pool ids, rank 0's oracle labels them, labels are written to disk, broadcast, added) →
evaluate every test split → record. The campaign orders rounds and persists state; the
acquisition itself is the callback's (acquisition/callback.py), and the campaign reads what
it returns (:class:`AcquisitionResult`). The last round acquires nothing, so every label bought
is trained on. A fit stops early on ``val/loss`` and ends with the best epoch's weights (the
EMA weights with ``model.ema_decay``): those are tested, exported, checkpointed, acquired
with and warm-started from; the record holds ``epochs`` (run) and ``best_epoch`` (0-based).
Every rank runs this loop (Lightning's DDP launcher re-executes the script); files are
written by rank 0 only.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional

import lightning.pytorch as pl
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from al_lightning.acquisition import AcquisitionCallback, AcquisitionResult, build_strategy, strategy_label
from al_lightning.acquisition.pass_state import PassCheckpoint
from al_lightning.atomic import atomic_write
from al_lightning import console, faults
from al_lightning.campaign import fitstate, interrupts, outputs, preflight, state
from al_lightning.campaign.checkpoint import load_checkpoint, save_checkpoint
from al_lightning.campaign.config import CampaignConfig, resolve_seeds
from al_lightning.campaign.fingerprint import structure_hash
from al_lightning.campaign.labeler import CampaignLabeler
from al_lightning.campaign.lock import CampaignLock, CampaignLocked
from al_lightning.campaign.labeling import LabelStore
from al_lightning.data.io import write_extxyz
from al_lightning.model.callbacks import BestWeights, LossCurve
from al_lightning.model.metrics import split_metrics
from al_lightning.model.replay import settings as replay_settings



TrainerFactory = Callable[[int, TensorBoardLogger, List[pl.Callback]], pl.Trainer]


def default_trainer_factory(**trainer_kwargs: Any) -> TrainerFactory:
    """Factory of per-round Trainers (TRAPS: a second fit on one Trainer returns at once).

    :class:`BestWeights` is a Lightning ``Checkpoint`` (so it runs last), which Lightning refuses
    under ``enable_checkpointing=False``: with one present, checkpointing is on; that adds no
    ``.ckpt`` files (no default ``ModelCheckpoint`` is added when a Checkpoint exists).
    """

    def make(round_: int, logger: TensorBoardLogger, callbacks: List[pl.Callback]) -> pl.Trainer:
        kw = dict(trainer_kwargs)
        kw["callbacks"] = list(kw.get("callbacks") or []) + callbacks
        kw.update(logger=logger, inference_mode=False, use_distributed_sampler=False)
        kw.setdefault("enable_checkpointing", False)
        if any(isinstance(c, Checkpoint) for c in kw["callbacks"]):
            kw["enable_checkpointing"] = True
        kw.setdefault("num_sanity_val_steps", 0)
        interrupts.no_slurm_requeue(kw, logger.save_dir)
        if kw.get("enable_progress_bar") is None and not console.interactive():
            kw["enable_progress_bar"] = False  # a log file or SLURM output: the round lines, no bars
        if kw.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in kw["callbacks"]):
            kw["callbacks"].append(console.EpochBar())
        return pl.Trainer(**kw)

    return make


class Campaign:
    """Runs, records and resumes one campaign. ``run()`` returns the state (campaign.json)."""

    def __init__(self, cfg: CampaignConfig, module, datamodule, make_trainer: TrainerFactory,
                 config_dump: Optional[str] = None) -> None:
        cfg = resolve_seeds(cfg, datamodule)
        self.cfg, self.module, self.dm, self.make_trainer = cfg, module, datamodule, make_trainer
        self.dir = cfg.directory
        self.strategy = build_strategy(cfg.strategy, cfg.strategy_kwargs)
        self.store = LabelStore(self.dir)
        self.labeler = CampaignLabeler(cfg, module, datamodule, self.store, self.dir)
        self.config_dump = config_dump
        self.state: Dict[str, Any] = {"name": cfg.name, "config": asdict(cfg), "fingerprint": self.fingerprint(),
                                      "status": "running", "rounds": [], "failed": []}

    @property
    def is_zero(self) -> bool:
        return rank_zero_only.rank == 0

    def fingerprint(self) -> Dict[str, Any]:
        """What a resumed run must share with the stored campaign (else refused unless forced); the
        replay settings too when ``model.replay`` is on (its files follow from them and the foundation)."""
        out = preflight.campaign_fingerprint(self.cfg, self.dm)
        replay = getattr(self.module, "replay", None)
        if replay is not None and replay.source:
            out["replay"] = replay_settings(replay)
        return out

    # ------------------------------------------------------------------ loop
    def prepare(self) -> int:
        """Every check before the first write (the same ones ``--dry_run`` makes); loads the data,
        the model and a stored campaign. Returns the first round still to run."""
        found = preflight.problems(self.cfg, self.module, self.dm)
        if preflight.cannot_load(self.cfg, self.module, self.dm):
            preflight.raise_problems(found)
        self.dm.prepare_data()
        self.dm.setup("fit")
        self.module.build(self.dm)
        found += preflight.problem_of(lambda: self.dm.validate(self.module.z_table()))
        if found:  # the stored rounds are not loaded: check the pool as for a fresh start
            preflight.raise_problems(found + self._pool_problems(self.cfg.rounds))
        if self.cfg.rounds > 0:
            self.labeler.oracle(0)  # a calculator that cannot be built fails here, before anything is written
        start = self._resume()
        preflight.check_pool_records(self.cfg, self.dm)
        preflight.raise_problems(self._pool_problems(self.cfg.rounds - start))
        self._verify_stored_labels(start)
        return start

    def _verify_stored_labels(self, r: int) -> None:
        """The stored outcomes of a resumed round must belong to today's pool structures (before any fit)."""
        ids = self.store.load_selection(r) if r < self.cfg.rounds else None
        if ids:
            pool = self.dm.pool_dataset()
            self.store.verify(r, {int(i): structure_hash(pool.get_atoms(int(i))[1]) for i in ids})
            failed = self.store.stored(r)[1]
            self._stop_on_failures(r, len(ids), {i: failed[i] for i in ids if i in failed})  # before any fit

    def _stop_on_failures(self, r: int, n_selected: int, failed: Dict[int, str]) -> None:
        """Too many of round r's labels failed: stop (status 2) instead of fitting on without them."""
        stop = state.failure_stop(self.store.path, r, n_selected, failed, self.cfg.max_failed_fraction)
        if stop:
            raise state.StateError(stop)

    def _pool_problems(self, rounds_left: int) -> List[str]:
        if rounds_left <= 0 or "pool" not in self.dm.split_paths():  # no acquisition left (rounds=0 needs no pool)
            return []
        return preflight.pool_problems(self.strategy, self.cfg.budget, rounds_left, len(self.dm.candidate_ids()))

    def run(self) -> Dict[str, Any]:
        """Lock the directory (rank 0, for the whole run), check, record the fingerprint, run. A stop
        signal or SystemExit raises :class:`interrupts.Stopped` (status 128 + signal, or 2)."""
        lock = CampaignLock(self.dir) if self.is_zero else None
        try:
            with interrupts.stops_told():
                if lock is not None and self.dir.is_dir():
                    lock.acquire()  # before the stored state is read
                start = self.prepare()
                if lock is not None:
                    self._start_writing(lock, start)
                for r in range(start, self.cfg.rounds + 1):
                    self.run_round(r)
                self.state["status"] = "complete"
                self._write_state()
                return self.state
        finally:
            if lock is not None:
                lock.release()

    def _start_writing(self, lock: CampaignLock, start: int) -> None:
        """Rank 0, checks passed: hold the lock, then fingerprint.json first, then config.yaml."""
        if not lock.held:  # the folder did not exist when the checks ran
            lock.acquire()
            if any((self.dir / n).exists() for n in (preflight.FINGERPRINT_FILE, "campaign.json")):
                raise CampaignLocked(f"{self.dir} was started by another process while this one was checking it; "
                                     "rerun the same command to resume it")
        stored = (self.store.round_dir(start) / "selected.json").exists()
        console.say(console.campaign_start(self.cfg.name, self.dir, start, self.cfg.rounds, self.state["rounds"], stored))
        preflight.write_fingerprint(self.dir, self.state["fingerprint"])
        if self.config_dump:
            atomic_write(self.dir / "config.yaml", lambda fh: fh.write(self.config_dump))

    def _resume(self) -> int:
        """Load a stored campaign (if any); returns the first round still to run."""
        path = self.dir / "campaign.json"
        preflight.raise_problems([p for p in [preflight.fingerprint_refusal(self.dir, self.fingerprint(),
                                                                            self.cfg.force)] if p])
        if not path.exists():
            return 0
        rounds, failed = state.load_rounds(self.dir, self.cfg.rounds)
        self.state.update(rounds=rounds, failed=failed, status="running")
        if rounds:
            ckpt = load_checkpoint(self.dir / f"round_{len(rounds) - 1:03d}" / "checkpoint.pt")
            self.module.net.load_state_dict(ckpt["net"])
            self.dm.load_state_dict(ckpt["datamodule"])
        return len(rounds)

    def run_round(self, r: int) -> None:
        """Fit (the callback acquires and labels at its end, r < R), test, record, persist."""
        pl.seed_everything(self.cfg.seed * 100_003 + r, workers=True, verbose=False)
        self.dm.round = r
        if r > 0 and not self.cfg.warm_start:
            self.module.reset_weights()
        labeled = self.dm.labeled_structures()
        n_labeled, n_atoms = len(labeled), sum(len(a) for a in labeled)
        logger = outputs.CampaignLogger(save_dir=str(self.dir), name="tb", version=f"round_{r:03d}")
        fit_callbacks = self._fit_callbacks()
        acquisition = (AcquisitionCallback(self.strategy, self.cfg.budget, r, self.cfg.seed, self.labeler,
                                           fit=self._member_fit(r),
                                           pass_state=PassCheckpoint(self.dir / f"round_{r:03d}",
                                                                     self.cfg.pass_checkpoint_minutes))
                       if r < self.cfg.rounds else None)
        trainer = self.make_trainer(r, logger, [*fit_callbacks, *([acquisition] if acquisition else [])])
        fit = self._fit(r, trainer, fit_callbacks, acquisition)
        result = acquisition.result if acquisition else AcquisitionResult(r, [])
        if acquisition:
            self._record_failures(r, result)
        trainer.test(self.module, datamodule=self.dm, verbose=False)
        metrics = {**fit["val"], **split_metrics(trainer.callback_metrics, self.dm.test_splits)}
        record = {"round": r, "n_labeled": n_labeled, "n_labeled_atoms": n_atoms, "selected_ids": [int(i) for i in result.selected],
                  "metrics": metrics, "epochs": fit["epochs"], "best_epoch": fit["best_epoch"],
                  "fit_seconds": round(fit["fit_seconds"], 2),
                  "acquire_seconds": round(result.seconds.get("acquire", 0.0), 2),
                  "pass_resumed_from": result.pass_resumed_from,
                  "label_seconds": round(result.seconds.get("label", 0.0), 2)}
        if result.selected:  # what was bought (from its labels), and the strategy's logged scalars
            record["acquired"] = outputs.selection_descriptors(self.dm.labeled_structures()[n_labeled:], labeled)
            record["acquisition"] = {k: float(v) for k, v in result.scalars.items()}
        if result.fits:  # a committee's member fits: their cost is in acquire_seconds
            record["member_fits"] = [{k: f[k] for k in ("name", "seed", "epochs", "best_epoch") if k in f}
                                     for f in result.fits]
        self.state["rounds"].append(record)
        if self.is_zero:
            console.say(console.round_summary(record))  # first: a full disk below still leaves the line
            self._write_round_outputs(r, record)
            stalled = console.stalled_round(record)
            if stalled:
                console.say("warning: " + stalled)
        trainer.strategy.barrier()

    def _fit(self, r: int, trainer: pl.Trainer, fit_callbacks, acquisition) -> Dict[str, Any]:
        """Fit round r (the acquisition runs at the fit's end) → its epochs, best epoch, val metrics and
        seconds. The finished fit is kept (round_NNN/fit_state.pt, rank 0) before anything is acquired;
        a rerun of the round — after a crash in the pool pass or labeling, or a file hand-off that
        waited for labels — loads it instead of fitting again (and so finds its pass state valid)."""
        path, key = self.dir / f"round_{r:03d}" / fitstate.FILE, fitstate.fit_key(self.dm, r, self.cfg.seed)
        kept = fitstate.load_fit(path, key) if acquisition else None
        if kept is not None:
            self.module.net.load_state_dict(kept["net"])
            trainer.fit_loop.max_epochs = 0  # no training; the acquisition callback still runs at fit end
        t0 = time.perf_counter()

        def keep(fitted: pl.Trainer) -> None:
            if self.is_zero and kept is None:
                summary = self._fit_summary(fitted, fit_callbacks, None, time.perf_counter() - t0)
                fitstate.save_fit(path, key, self.module.net, summary)

        if acquisition is not None:
            acquisition.fitted = keep
        trainer.fit(self.module, datamodule=self.dm)
        if kept is not None:
            return kept["summary"]
        return self._fit_summary(trainer, fit_callbacks, acquisition, time.perf_counter() - t0)

    @staticmethod
    def _fit_summary(trainer: pl.Trainer, fit_callbacks, acquisition, seconds: float) -> Dict[str, Any]:
        """Epochs, best epoch, val metrics and the fit's own seconds (acquisition and labeling excluded)."""
        result = acquisition.result if acquisition and acquisition.result else AcquisitionResult(0, [])
        spent = result.seconds.get("acquire", 0.0) + result.seconds.get("label", 0.0)
        best = next((c for c in fit_callbacks if isinstance(c, BestWeights) and c.best_epoch is not None), None)
        val = split_metrics(best.best_metrics if best else trainer.callback_metrics, ["val"])
        return {"epochs": int(trainer.current_epoch), "best_epoch": best.best_epoch if best else None,
                "val": {k: float(v) for k, v in val.items()}, "fit_seconds": seconds - spent}

    def _record_failures(self, r: int, result: AcquisitionResult) -> None:
        """New failures go to the state; too many stop the campaign (every rank: the same result)."""
        known = {f["id"] for f in self.state["failed"]}
        self.state["failed"] += [{"id": i, "round": r, "error": e} for i, e in result.failed.items() if i not in known]
        self._stop_on_failures(r, len(result.selected), result.failed)

    def _member_fit(self, r: int):
        """How a strategy fits another module in round r: as the main model (Trainer factory,
        early stopping, best weights), seeded, logged to tb/round_rrr_<name>."""

        def fit(module, datamodule, seed: int, name: str) -> Dict[str, Any]:
            pl.seed_everything(seed, workers=True, verbose=False)
            logger = outputs.CampaignLogger(save_dir=str(self.dir), name="tb", version=f"round_{r:03d}_{name}")
            callbacks = [*self._fit_callbacks(), LossCurve()]
            trainer = self.make_trainer(r, logger, callbacks)
            trainer.fit(module, datamodule=datamodule)
            best = next((c for c in callbacks if isinstance(c, BestWeights)), None)
            return {"name": name, "seed": seed, "epochs": int(trainer.current_epoch),
                    "best_epoch": best.best_epoch if best else None, "val_loss": callbacks[-1].values}

        return fit

    def _fit_callbacks(self) -> List[pl.Callback]:
        """Early stopping on val/loss and the best-weights keeper (the EMA comes with the module)."""
        out: List[pl.Callback] = []
        if self.cfg.early_stopping_patience is not None:
            out.append(EarlyStopping(monitor="val/loss", mode="min", patience=self.cfg.early_stopping_patience))
        if self.cfg.restore_best_weights:
            out.append(BestWeights(monitor="val/loss"))
        return out

    # ------------------------------------------------------------------ outputs
    def _write_round_outputs(self, r: int, record: dict) -> None:
        with interrupts.deferred():  # a stop signal waits for campaign.json, the round's commit
            self._write_round_files(r, record)

    def _write_round_files(self, r: int, record: dict) -> None:
        rdir = self.dir / f"round_{r:03d}"
        outputs.write_json(rdir / "selected_ids.json", record["selected_ids"])
        outputs.write_json(rdir / "metrics.json", record["metrics"])
        faults.hit("write")
        write_extxyz(rdir / "labeled.extxyz", self.dm.labeled_structures()[: record["n_labeled"]])
        if record["selected_ids"]:
            bought, _ = self.store.stored(r)
            write_extxyz(rdir / "acquired.extxyz", [bought[i] for i in record["selected_ids"] if i in bought])
        if self.cfg.export_models:
            outputs.export_model(self.module.net, rdir / "model.model")
        faults.hit("write")
        save_checkpoint(rdir / "checkpoint.pt", {"net": self.module.net.state_dict(),
                                                 "datamodule": self.dm.state_dict(), "round": r})
        (rdir / fitstate.FILE).unlink(missing_ok=True)  # a kept hand-off fit: in the checkpoint now
        outputs.log_round_metrics(self.dir / "tb" / "rounds", r, record["n_labeled"], record["metrics"])
        faults.hit("write")
        self._write_state()

    def _write_state(self) -> None:
        if not self.is_zero:
            return
        outputs.write_json(self.dir / "campaign.json", self.state)
        if self.state["rounds"]:
            outputs.plot_learning_curves(self.state["rounds"], self.dir / "learning_curve.png",
                                         title=f"campaign {self.cfg.name!r}: strategy {strategy_label(self.cfg.strategy)}")
            outputs.write_report(self.state, self.dir / "report.md")

