"""``al-lightning`` command line: a LightningCLI whose ``fit`` runs a whole campaign.

    al-lightning fit -c configs/demo.yaml [--campaign.rounds 5 --trainer.max_epochs 20 ...]
    al-lightning fit -c configs/demo.yaml --dry_run     # validate config + data, exit
    al-lightning study -c configs/study_emt.yaml        # strategies x seeds -> docs/results/
    al-lightning pretrain -c configs/pretrain_emt.yaml  # train the shipped backbone

Every option of the model (``model.*``), data (``data.*``), trainer (``trainer.*``) and
campaign (``campaign.*``) can be set in YAML or overridden on the command line. Bad input
ends with one line ``al-lightning: error: …`` and exit status 2. This module dispatches the
subcommands; ``fit`` itself lives in fitcli.py.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import al_lightning  # noqa: F401  (import order: mace before e3nn)
from al_lightning.fitcli import guarded, run_fit


def study(args: List[str]) -> int:
    """``al-lightning study -c STUDY.yaml``: run / resume a strategies × seeds study."""
    import argparse

    from al_lightning.campaign.study import run_study

    parser = argparse.ArgumentParser(prog="al-lightning study", description=run_study.__doc__)
    parser.add_argument("-c", "--config", required=True, help="study YAML (see configs/study_emt.yaml)")
    parser.add_argument("--jobs", type=int, default=1, help="campaigns run at a time (each its own process)")
    parser.add_argument("--executor", default="local", choices=["local", "submitit"],
                        help="local processes, or one submitit job per campaign (SLURM where available)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the tables and plots from <output>/campaigns only (runs nothing)")
    ns = parser.parse_args(args)
    out = run_study(ns.config, jobs=ns.jobs, executor=ns.executor, report_only=ns.report_only)
    print(f"al-lightning: study written to {out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point (``al-lightning``); returns the exit status (see :func:`fitcli.guarded`)."""
    import warnings

    from al_lightning.console import quiet_lightning

    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    quiet_lightning(verbose="--verbose" in (sys.argv if argv is None else argv))  # before the CLI seeds
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["study"]:
        return guarded(lambda: study(args[1:]))
    if args[:1] == ["pretrain"]:
        from al_lightning.pretrain import main as pretrain

        return guarded(lambda: pretrain(args[1:]))
    return run_fit(argv)


if __name__ == "__main__":
    sys.exit(main())
