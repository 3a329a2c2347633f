"""``al-lightning fit``: a LightningCLI whose ``fit`` runs a whole campaign, and the mapping of
errors to exit statuses that every subcommand shares (:func:`guarded`).

Kept apart from cli.py (the dispatcher) so that campaign/study.py can run campaigns through
:func:`run_fit` without importing the dispatcher that imports it (no import cycle).
"""

from __future__ import annotations

import sys
from typing import Callable, List, Optional

import al_lightning  # noqa: F401  (import order: mace before e3nn)
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI

from al_lightning.campaign.interrupts import Stopped
from al_lightning.oracle import HandoffPending
from al_lightning.campaign.state import os_error_line
from al_lightning.campaign.config import CampaignConfig, resolve_seeds
from al_lightning.campaign.runner import Campaign, default_trainer_factory
from al_lightning.data.datamodule import ActiveDataModule
from al_lightning.data.io import DataError
from al_lightning.model.module import MACEModule
from al_lightning.oracle import OracleError

TRAINER_DEFAULTS = {
    "max_epochs": 30,
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "inference_mode": False,
    "use_distributed_sampler": False,
    "enable_checkpointing": False,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 5,
}


class UsageError(ValueError):
    """Bad command-line / config input (exit status 2)."""


class ALLightningCLI(LightningCLI):
    """LightningCLI with a ``campaign`` group, ``--dry_run`` and a campaign-running ``fit``."""

    def __init__(self, args: Optional[List[str]] = None, run: bool = True) -> None:
        super().__init__(MACEModule, ActiveDataModule, seed_everything_default=0, save_config_callback=None,
                         trainer_defaults=TRAINER_DEFAULTS, args=args, run=run,
                         auto_configure_optimizers=False, subclass_mode_model=False, subclass_mode_data=False)

    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        parser.description = ("Active learning for MACE potentials. 'fit' runs (or resumes) a whole campaign: "
                              "R acquisitions and R + 1 fits, outputs in campaign.campaign_dir. Each round gets "
                              "its own Trainer from the trainer.* options; the campaign sets trainer.logger "
                              "(TensorBoard in campaign_dir/tb), inference_mode and use_distributed_sampler "
                              "itself, so values given for those are ignored.")
        parser.epilog = ("other subcommands: 'al-lightning study -c CONFIG' runs a strategies x seeds benchmark "
                         "study (configs/study_emt.yaml); 'al-lightning pretrain -c CONFIG' trains a backbone on "
                         "the embedded foundation data (configs/pretrain_emt.yaml, configs/pretrain_xtb.yaml). Add --help to either. "
                         "Seeds: seed_everything (default 0) seeds Lightning and, unless set, campaign.seed "
                         "(acquisition draws and sketches, each round's training seed), which seeds data.seed "
                         "(training-batch shuffling); data.emt.seed / data.xtb.seed choose the embedded dataset itself "
                         "and never follows the others.")
        return parser

    def _add_subcommands(self, parser, **kwargs) -> None:
        super()._add_subcommands(parser, **kwargs)
        parser.usage = "al-lightning [-h] [-c CONFIG] {fit,study,pretrain} ..."
        sub = parser._subcommands_action
        for action in sub._choices_actions:  # Trainer.fit's own line means nothing here
            if action.dest == "fit":
                action.help = ("run or resume a campaign: R acquisitions and R + 1 fits "
                               "(al-lightning fit --help lists every option)")
        # study and pretrain are dispatched before this parser (cli.py); listed here so --help shows them
        for name, text in (("study", "run, resume or report a strategies x seeds study (al-lightning study --help)"),
                           ("pretrain", "train a backbone on embedded data, export .model + card "
                                        "(al-lightning pretrain --help)")):
            sub._choices_actions.append(type(sub._choices_actions[0])(name, (), text))

    @staticmethod
    def subcommands():
        # ckpt_path / weights_only mean nothing for a campaign (it resumes from its own directory)
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule", "ckpt_path", "weights_only"}}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(CampaignConfig, "campaign")
        from jsonargparse import ActionYesNo

        parser.add_argument("--dry_run", action=ActionYesNo, default=False,
                            help="validate the config and the presence of data files, then exit")
        parser.add_argument("--verbose", action=ActionYesNo, default=False,
                            help="show Lightning's own info lines (devices, tips, model summary)")

    def before_instantiate_classes(self) -> None:
        from al_lightning.console import quiet_lightning

        quiet_lightning(bool(self.config[self.subcommand].get("verbose")))

    def fit(self, model: MACEModule, datamodule: ActiveDataModule = None, **_) -> None:
        cfg = self.config_init[self.subcommand]
        campaign_cfg = resolve_seeds(cfg["campaign"], datamodule, self.config[self.subcommand].get("seed_everything"))
        if cfg["dry_run"]:
            dry_run(model, datamodule, campaign_cfg)
            return
        trainer_kwargs = {k: v for k, v in self.config_init[self.subcommand]["trainer"].items()}
        trainer_kwargs.pop("logger", None)
        dump = self._parser(self.subcommand).dump(self.config[self.subcommand], skip_none=False, skip_validation=True)
        campaign = Campaign(campaign_cfg, model, datamodule, default_trainer_factory(**trainer_kwargs), dump)
        state = campaign.run()
        if campaign.is_zero:
            last = state["rounds"][-1]
            summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(last["metrics"].items()) if k.endswith("forces_mae"))
            print(f"al-lightning: campaign {campaign_cfg.name!r} complete in {campaign.dir}: {summary}")


def dry_run(model: MACEModule, datamodule: ActiveDataModule, campaign: CampaignConfig) -> None:
    """The checks a run makes before its first write (campaign/preflight.py, the same function),
    plus every record of user files read once and whether another process holds the campaign
    directory (the lock is not taken); raises naming all problems, else prints OK."""
    from al_lightning.campaign import preflight

    found = preflight.problems(campaign, model, datamodule, probe_lock=True)
    if not found and datamodule.files is not None:
        found += preflight.problem_of(datamodule.validate)
    preflight.raise_problems(found)
    if datamodule.files is not None:
        sizes = {s: len(datamodule.structure_file(s)) for s in datamodule.split_paths()}
        where = "files"
    else:
        spec = datamodule.embedded
        sizes = {s: n for s, n in spec.sizes.items() if n}
        where = f"embedded {spec.cache_name} (cache key {spec.key()})"
    if not (campaign.directory / "campaign.json").exists():  # a fresh start: budget x rounds against the pool
        from al_lightning.acquisition.config import build_strategy

        strategy = build_strategy(campaign.strategy, campaign.strategy_kwargs)
        preflight.raise_problems(preflight.pool_problems(strategy, campaign.budget, campaign.rounds, sizes.get("pool", 0)))
    print(f"al-lightning: dry run OK: data from {where}: {sizes}; campaign_dir {campaign.directory}")


def one_line(exc: BaseException) -> str:
    """The most specific line of an error (jsonargparse nests ours under Union wrappers)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    nested = [ln[2:] for ln in lines if ln.startswith("- ") and "NoneType" not in ln]
    if lines[0].startswith("Does not validate") and nested:
        return nested[0]
    return lines[0]


def guarded(call: Callable[[], int]) -> int:
    """``call()``'s status, with every error a user can cause mapped to one line and a status: 0 done
    (or a file hand-off waiting for labels), 2 bad input or unusable state, 128 + N stopped by
    signal N (SIGTERM 143, SIGINT 130, SIGUSR1 138), 2 for a SystemExit(0) inside the campaign."""
    try:
        return call()
    except HandoffPending as exc:  # a clean stop on purpose: the labels are to be computed elsewhere
        print(f"al-lightning: {exc}", file=sys.stderr)
        return 0
    except Stopped as exc:  # a signal (128 + its number) or a SystemExit inside the campaign (2)
        print(f"al-lightning: {exc}", file=sys.stderr)
        return exc.status
    except SystemExit as exc:  # jsonargparse reports bad options itself (status 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except (DataError, OracleError, UsageError, ValueError, FileNotFoundError, KeyError,
            MisconfigurationException) as exc:
        print(f"al-lightning: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk, mostly
        print(f"al-lightning: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


def run_fit(argv: Optional[List[str]] = None) -> int:
    """``al-lightning fit …`` (``argv`` without the program name; None: ``sys.argv``) → exit status."""

    def fit() -> int:
        ALLightningCLI(args=None if argv is None else list(argv))
        return 0

    return guarded(fit)
