"""``al-lightning pretrain``: train the shipped backbone on the embedded foundation data.

    al-lightning pretrain -c configs/pretrain_emt.yaml          # -> logs/pretrain_emt/emt_foundation.model + .json
    al-lightning pretrain -c configs/pretrain_emt.yaml --trainer.max_epochs 1 \\
        --pretrain.work_dir /tmp/pt --pretrain.output /tmp/pt/m.model \\
        --pretrain.check_card models/emt_foundation.json      # reproduce the card's epoch-1 val loss

A LightningCLI over :class:`~al_lightning.model.module.MACEModule` (``model.*``),
:class:`FoundationDataModule` (``data.*``) and the Trainer (``trainer.*``), plus ``pretrain.*``.
Early stopping on ``val/loss``; ``trainer.max_time`` bounds the wall time. Rerunning the same
command resumes from ``<work_dir>/checkpoints/last.ckpt``. At the end the best-``val/loss``
weights are exported as a standard MACE ``.model`` file with a JSON card beside it (command,
commit, data-spec hash, seed, epochs, wall time, validation errors, per-epoch history, sha256).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from al_lightning.campaign import interrupts
from al_lightning.campaign.outputs import export_model, write_json
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.cache import cache_root
from al_lightning.data.foundation import FoundationSpec
from al_lightning.data.xtb import XTBFoundationSpec
from al_lightning.model.mace import MACEConfig
from al_lightning.model.module import MACEModule

TRAINER_DEFAULTS = {"max_epochs": 200, "accelerator": "cpu", "devices": 1, "inference_mode": False,
                    "use_distributed_sampler": False, "num_sanity_val_steps": 0, "log_every_n_steps": 20}


class FoundationDataModule(ActiveDataModule):
    """An embedded backbone dataset as a datamodule: ``train`` is the labeled set, plus ``val``.

    Args:
        foundation: spec of the EMT foundation data (docs/design.md §7,
            :mod:`al_lightning.data.foundation`; the default when ``xtb`` is not given).
        xtb: spec of the near-equilibrium xTB molecule data of the molecular backbone
            (:class:`al_lightning.data.xtb.XTBFoundationSpec`); give one of the two.
        batch_size, eval_batch_size, num_workers, generate_workers, seed: as ActiveDataModule.
    """

    def __init__(self, foundation: Optional[FoundationSpec] = None, xtb: Optional[XTBFoundationSpec] = None,
                 batch_size: int = 8, eval_batch_size: int = 32, num_workers: int = 0, generate_workers: int = 2,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                         generate_workers=generate_workers, seed=seed)
        if foundation is not None and xtb is not None:
            raise ValueError("data: give either 'foundation' (EMT) or 'xtb' (molecules), not both")
        self.foundation = xtb or foundation or FoundationSpec()

    def split_paths(self) -> Dict[str, Path]:
        folder = cache_root() / self.foundation.cache_name / self.foundation.key()
        names = {"initial": "train", "val": "val"}  # the labeled set of a fit is the "initial" split
        return {ours: folder / f"{theirs}.extxyz" for ours, theirs in names.items()
                if self.foundation.sizes.get(theirs, 0) > 0}

    def prepare_data(self) -> None:
        self.foundation.ensure(workers=self.generate_workers)

    def elements(self) -> List[str]:
        return list(self._elements or self.foundation.elements)


@dataclass
class PretrainConfig:
    """``pretrain.*`` options.

    Args:
        output: path of the exported MACE ``.model`` file (its JSON card: the same path with ``.json``);
            never a tracked file under models/ (copy it there yourself to replace a shipped backbone).
        work_dir: checkpoints and TensorBoard; rerunning the same command resumes from
            ``<work_dir>/checkpoints/last.ckpt``.
        patience: early-stopping epochs without a ``val/loss`` improvement.
        check_card: after training, compare the per-epoch val losses with those of this card (rel 1e-6)
            and fail (exit 1) on a mismatch: reproduces a shipped backbone's first epochs.
    """

    output: str = "logs/pretrain/backbone.model"
    work_dir: str = "logs/pretrain"
    patience: int = 15
    check_card: Optional[str] = None

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"pretrain.patience must be >= 1, got {self.patience}")


class History(pl.Callback):
    """Per-epoch validation metrics and elapsed seconds (kept in checkpoints for a resume)."""

    def __init__(self) -> None:
        self.epochs: List[Dict[str, float]] = []
        self.seconds = 0.0
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.seconds += time.perf_counter() - self._t0
        row = {"epoch": trainer.current_epoch + 1, "seconds": round(self.seconds, 1)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.epochs.append(row)

    def state_dict(self) -> Dict[str, Any]:
        return {"epochs": self.epochs, "seconds": self.seconds}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.epochs, self.seconds = list(state["epochs"]), float(state["seconds"])


class PretrainCLI(LightningCLI):
    """LightningCLI parsing ``model``, ``data`` (foundation), ``trainer`` and ``pretrain`` groups."""

    def __init__(self, args: Optional[List[str]] = None) -> None:
        super().__init__(MACEModule, FoundationDataModule, seed_everything_default=0, save_config_callback=None,
                         trainer_defaults=TRAINER_DEFAULTS, args=args, run=False,
                         auto_configure_optimizers=False, subclass_mode_model=False, subclass_mode_data=False)

    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        parser.prog = "al-lightning pretrain"
        parser.description = ("Train a backbone on an embedded dataset (data.foundation: the EMT foundation data; "
                              "data.xtb: near-equilibrium GFN2-xTB molecules) with early stopping on val/loss, "
                              "bounded by trainer.max_time; export the best weights as a MACE .model file with a "
                              "JSON card (pretrain.output). A stopped run (SIGTERM, SIGINT: exit status 128 + N) "
                              "resumes when the same command is run again.")
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        from jsonargparse import ActionYesNo

        parser.add_class_arguments(PretrainConfig, "pretrain")
        parser.add_argument("--verbose", action=ActionYesNo, default=False,
                            help="show Lightning's own info lines (devices, tips)")

    def before_instantiate_classes(self) -> None:
        from al_lightning.console import quiet_lightning

        quiet_lightning(bool(self.config.get("verbose")))

    def instantiate_trainer(self, **kwargs):  # the real Trainer is built by run_pretrain
        return None


def run_pretrain(cli: PretrainCLI, command: str) -> Dict[str, Any]:
    """Fit (or resume) with early stopping, export the best weights and write the card."""
    cfg: PretrainConfig = cli.config_init["pretrain"]
    commit = _git_commit()  # the code that trains, not the checkout at export time (hours later)
    work = Path(cfg.work_dir).expanduser().resolve()
    history, best = History(), ModelCheckpoint(dirpath=work / "checkpoints", filename="best", monitor="val/loss",
                                               mode="min", save_top_k=1, save_last=True)
    trainer_kwargs = dict(cli.config_init["trainer"])
    trainer_kwargs.update(callbacks=[*(trainer_kwargs.get("callbacks") or []), best, history,
                                     EarlyStopping(monitor="val/loss", patience=cfg.patience)],
                          logger=TensorBoardLogger(save_dir=str(work), name="tb", version=""),
                          enable_checkpointing=True)
    trainer = pl.Trainer(**trainer_kwargs)
    last = work / "checkpoints" / "last.ckpt"
    module, dm = cli.model, cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    module.build(dm)
    with interrupts.stops_told():  # SIGTERM/SIGINT/SIGUSR1: status 128 + N, resumable from last.ckpt
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None, weights_only=False)
    state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)  # our own checkpoint
    module.load_state_dict(state["state_dict"])
    out = Path(cfg.output).expanduser()
    export_model(module.net, out)
    card = make_card(cli, command, out, history, best, trainer, commit)
    write_json(out.with_suffix(".json"), card)
    return card


def make_card(cli: PretrainCLI, command: str, out: Path, history: History, best: ModelCheckpoint,
              trainer: pl.Trainer, commit: Optional[str]) -> Dict[str, Any]:
    """The JSON card written beside the model file."""
    dm: FoundationDataModule = cli.datamodule
    best_row = min(history.epochs, key=lambda r: r.get("val/loss", float("inf")))
    module: MACEModule = cli.model
    return {
        "model_file": out.name, "sha256": sha256(out), "bytes": out.stat().st_size,
        "command": command, "commit": commit,
        "data": {"kind": dm.foundation.cache_name, "spec_hash": dm.foundation.key(), "spec": asdict(dm.foundation),
                 "frames": {s: int(dm.foundation.sizes.get(s, 0)) for s in dm.foundation.splits}},
        "seed": int(cli.config_init.get("seed_everything") or 0),
        "architecture": asdict(module.cfg if isinstance(module.cfg, MACEConfig) else MACEConfig()),
        "dtype": module.hparams.dtype,
        "parameters": int(sum(p.numel() for p in module.net.parameters())),
        "epochs_trained": len(history.epochs), "best_epoch": best_row["epoch"],
        "stopped_by": _stop_reason(trainer), "wall_seconds": round(history.seconds, 1),
        "validation": {k: v for k, v in best_row.items() if k.startswith("val/")},
        "history": history.epochs,
        "versions": _versions(),
    }


def check_card(card: Dict[str, Any], reference: Path, rel: float = 1e-6) -> str:
    """Compare per-epoch ``val/loss`` with a reference card; raises ValueError on a mismatch."""
    ref = json.loads(Path(reference).read_text())
    pairs = list(zip(card["history"], ref["history"]))
    if not pairs:
        raise ValueError(f"{reference}: no epochs to compare")
    for ours, theirs in pairs:
        a, b = ours["val/loss"], theirs["val/loss"]
        if abs(a - b) > rel * abs(b):
            raise ValueError(f"{reference}: epoch {ours['epoch']} val/loss {a:.9g} differs from the card's {b:.9g} "
                             f"(rel {abs(a - b) / abs(b):.2e} > {rel:g})")
    worst = max(abs(o["val/loss"] - t["val/loss"]) / abs(t["val/loss"]) for o, t in pairs)
    return f"val/loss of {len(pairs)} epoch(s) matches {reference} (max rel diff {worst:.1e})"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stop_reason(trainer: pl.Trainer) -> str:
    if any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks):
        return "early_stopping"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    return "max_time"


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> Dict[str, str]:
    import lightning
    import mace

    return {"python": sys.version.split()[0], "torch": torch.__version__, "lightning": lightning.__version__,
            "mace-torch": getattr(mace, "__version__", "?")}


def main(args: List[str]) -> int:
    """``al-lightning pretrain ARGS``; returns the exit status."""
    cli = PretrainCLI(args=args)
    card = run_pretrain(cli, "al-lightning pretrain " + " ".join(args))
    print(f"al-lightning: backbone {cli.config_init['pretrain'].output}: {card['epochs_trained']} epochs "
          f"({card['stopped_by']}), best epoch {card['best_epoch']}, val forces MAE "
          f"{card['validation'].get('val/forces_mae', float('nan')):.4f} eV/Å, {card['wall_seconds']:.0f} s")
    reference = cli.config_init["pretrain"].check_card
    if reference:
        try:
            print(f"al-lightning: {check_card(card, Path(reference))}")
        except ValueError as exc:
            print(f"al-lightning: error: {exc}", file=sys.stderr)
            return 1
    return 0
