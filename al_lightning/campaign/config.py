"""A campaign's options (``--campaign.*``; docs/design.md §2) and how its seeds follow the top-level one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Union

from al_lightning.acquisition.config import resolve


@dataclass
class CampaignConfig:
    """Campaign settings (``campaign.*`` in YAML or on the command line).

    Args:
        name: campaign name; the output folder is ``logs/<name>`` unless ``campaign_dir`` is set.
        campaign_dir: output folder (default ``logs/<name>``). Rerunning on it resumes; a run whose
            data, seed, strategy, budget or oracle differ from the stored campaign is refused, and so
            is a second run while another one holds the folder (its ``.lock``).
        rounds: number of acquisitions R (R + 1 fits); 0 = one fit + test evaluation.
        budget: structures acquired (labeled) per round, B.
        strategy: selection rule: a short name — random, pv_lcmd (posterior-variance shortlist +
            LCMD, the headline method), pv_topb (top-B posterior variance), lcmd (LCMD over the
            whole pool), committee_e / committee_f (committee energy / force disagreement) — or a
            class: {class_path: al_lightning.acquisition.PVStrategy, init_args: {...}} (any
            Strategy subclass, yours included); see docs/design.md §5.
        strategy_kwargs: options of the strategy, e.g. {feature_kind: ntk_ef, shortlist: 240}
            (added to init_args); feature_kind is one of ntk_e, ntk_f, ntk_ef, activation,
            descriptor (docs/design.md §4).
        oracle: who labels: "stored" (labels already in the pool file; offline benchmarks),
            "file" (hand-off: write a request, stop, resume when the labels file exists), the
            import path of an ASE calculator (e.g. ase.calculators.emt.EMT) or of an Oracle
            subclass, or {class_path: ..., init_args: {...}} of either.
        oracle_kwargs: keyword arguments of the calculator (or Oracle) class.
        oracle_timeout: seconds allowed per label for calculator oracles (null: no limit, the calculator
            runs in this process); with a limit the calculator runs in a separate worker process that
            is killed when the time is up (the label is recorded as failed).
        handoff_energy_key: key of the energies in a file hand-off's labels file (``oracle: file``);
            calculator results, as ``ase.io.write`` stores them after a calculation, are accepted too.
        handoff_forces_key: key of the forces in a file hand-off's labels file (calculator results too).
        max_failed_fraction: stop (exit status 2) when more than this fraction of a round's selected
            structures fail (oracle errors, timeouts, sanity filter); the failures are kept, never retried.
        sanity_min_distance: structures with two atoms closer than this (Å) are not sent to the
            oracle (recorded as failed; null: no check).
        sanity_max_force: structures whose predicted max |F| exceeds this (eV/Å) are not sent to
            the oracle (null: no check).
        seed: seed of the acquisition (random draws, sketches) and of each round's
            seed_everything; null: the top-level seed_everything. Also the default data.seed.
        warm_start: each fit starts from the previous round's (best, EMA when set) weights; false:
            from the initial / foundation weights.
        early_stopping_patience: stop a round's fit after this many validation epochs without a
            lower val/loss (null: always run trainer.max_epochs, which is the upper bound).
        restore_best_weights: before acquisition, test evaluation, export and checkpoint, load
            the weights of the round's best val/loss epoch (EMA weights with model.ema_decay).
        export_models: write round_NNN/model.model (a MACE model for MACECalculator).
        pass_checkpoint_minutes: the pool pass saves its state (round_NNN/pass_state.pt) this often;
            a rerun after a crash continues the pass from there and selects the same ids (0: after
            every pool batch).
        force: resume even when data, seed, strategy, budget or oracle changed (the stored
            rounds are kept as they are).
    """

    name: str = "campaign"
    campaign_dir: Optional[str] = None
    rounds: int = 0
    budget: int = 10
    strategy: Union[str, Dict[str, Any]] = "random"
    strategy_kwargs: Dict[str, Any] = field(default_factory=dict)
    oracle: Union[str, Dict[str, Any]] = "stored"
    oracle_kwargs: Dict[str, Any] = field(default_factory=dict)
    oracle_timeout: Optional[float] = None
    handoff_energy_key: str = "REF_energy"
    handoff_forces_key: str = "REF_forces"
    max_failed_fraction: float = 0.5
    sanity_min_distance: Optional[float] = 0.5
    sanity_max_force: Optional[float] = None
    seed: Optional[int] = None
    warm_start: bool = True
    early_stopping_patience: Optional[int] = 10
    restore_best_weights: bool = True
    export_models: bool = True
    pass_checkpoint_minutes: float = 5.0
    force: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"campaign.rounds must be >= 0, got {self.rounds}")
        if self.budget < 1:
            raise ValueError(f"campaign.budget must be >= 1, got {self.budget}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("campaign.early_stopping_patience must be >= 1 or null, "
                             f"got {self.early_stopping_patience}")
        if self.oracle_timeout is not None and self.oracle_timeout <= 0:
            raise ValueError(f"campaign.oracle_timeout must be > 0, got {self.oracle_timeout}")
        if self.pass_checkpoint_minutes < 0:
            raise ValueError(f"campaign.pass_checkpoint_minutes must be >= 0, got {self.pass_checkpoint_minutes}")
        if not 0 <= self.max_failed_fraction <= 1:
            raise ValueError(f"campaign.max_failed_fraction must be in [0, 1], got {self.max_failed_fraction}")
        resolve(self.strategy)  # an unknown name or class: one line naming the choices
        if not self.name or "/" in self.name:
            raise ValueError(f"campaign.name must be a non-empty folder name, got {self.name!r}")

    @property
    def directory(self) -> Path:
        return Path(self.campaign_dir or Path("logs") / self.name).expanduser().resolve()


def resolve_seeds(cfg: CampaignConfig, datamodule, seed_everything: Optional[int] = None) -> CampaignConfig:
    """Seeds not set explicitly follow the top-level one: ``campaign.seed`` ← ``seed_everything``
    (0 without one), ``data.seed`` ← ``campaign.seed``. ``data.emt.seed`` (which structures are
    generated) never follows: a study's seeds share one dataset."""
    if cfg.seed is None:
        cfg = replace(cfg, seed=int(seed_everything) if isinstance(seed_everything, int) else 0)
    if getattr(datamodule, "seed", 0) is None:
        datamodule.seed = cfg.seed
    return cfg
