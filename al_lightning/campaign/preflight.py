"""The checks a campaign makes before it writes anything, shared by ``fit`` and ``fit --dry_run``.

:func:`problems` lists every problem it finds (one line each) instead of stopping at the first:
strategy options, missing data files, a missing foundation file, a missing pool, the oracle
import and a stored campaign whose fingerprint the config does not match. ``Campaign.run``
raises them all at once (:func:`raise_problems`) before generating data or building the model;
``--dry_run`` runs the very same function, so a dry run that says OK is not refused later for a
reason these checks cover. Checks that need the data read (record validation, pool size against
budget × rounds) run afterwards, in both, too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

# fingerprint keys, in the order a refusal names them
FINGERPRINT_KEYS = ("data", "seed", "strategy", "strategy_kwargs", "budget", "oracle")


class PreflightError(ValueError):
    """One or more problems found before a campaign starts (exit status 2)."""


def problem_of(check: Callable[[], object]) -> List[str]:
    """``[]`` when ``check()`` passes, else its error's first line."""
    try:
        check()
    except (ValueError, KeyError, OSError, ImportError) as exc:
        text = str(exc).strip().splitlines()
        return [text[0] if text else type(exc).__name__]
    return []


def campaign_fingerprint(cfg, datamodule) -> Dict[str, Any]:
    """What a resumed run must share with the stored campaign (``cfg.seed`` already resolved)."""
    data = datamodule.files if datamodule.files is not None else {"emt": datamodule.emt.key()}
    return {"data": data, "seed": cfg.seed, "strategy": cfg.strategy, "strategy_kwargs": cfg.strategy_kwargs,
            "budget": cfg.budget, "oracle": cfg.oracle}


def fingerprint_refusal(path: Path, current: Dict[str, Any], force: bool = False) -> Optional[str]:
    """Why the campaign stored at ``path`` (campaign.json) refuses ``current`` (None: no stored
    campaign, a match, or ``force``)."""
    if force or not path.exists():
        return None
    try:
        stored = json.loads(path.read_text()).get("fingerprint", {})
    except (OSError, ValueError) as exc:
        return (f"{path}: unreadable campaign state ({type(exc).__name__}: {exc}); restore it from a backup "
                "or use another campaign_dir")
    changed = [k for k in FINGERPRINT_KEYS if k in current and stored.get(k) != current[k]]
    if not changed:
        return None
    what = ", ".join(f"{k} ({stored.get(k)!r} vs {current[k]!r})" for k in changed)
    return f"{path}: the stored campaign has a different {what}; use another campaign_dir or --campaign.force true"


def problems(cfg, module, datamodule) -> List[str]:
    """Every problem a run would stop on before its first write (no data or model is loaded)."""
    from al_lightning.acquisition.strategies import make_strategy

    out = problem_of(lambda: make_strategy(cfg.strategy, **cfg.strategy_kwargs))
    paths = datamodule.split_paths()
    out += [f"data file for split '{s}' not found: {p}" for s, p in paths.items() if p in datamodule.missing_files()]
    foundation = module.hparams.foundation
    if foundation and not Path(foundation).expanduser().is_file():
        out.append(f"foundation model file not found: {foundation} (model.foundation)")
    if cfg.rounds > 0 and "pool" not in paths:
        out.append("campaign.rounds > 0 needs a 'pool' split in data.files")
    if cfg.rounds > 0 and cfg.oracle not in ("stored", "file"):
        from al_lightning.oracle.oracles import import_object

        out += problem_of(lambda: import_object(cfg.oracle))
    refusal = fingerprint_refusal(cfg.directory / "campaign.json", campaign_fingerprint(cfg, datamodule), cfg.force)
    return out + ([refusal] if refusal else [])


def cannot_load(cfg, module, datamodule) -> bool:
    """True when the data or the model cannot be loaded at all (so later checks cannot run)."""
    foundation = module.hparams.foundation
    return bool(datamodule.missing_files() or (foundation and not Path(foundation).expanduser().is_file())
                or (cfg.rounds > 0 and "pool" not in datamodule.split_paths()))


def pool_problems(strategy, budget: int, rounds_left: int, n_left: int) -> List[str]:
    """Budget against the pool structures left (the strategy's own check, then all rounds)."""
    out = problem_of(lambda: strategy.check(budget, n_left)) if rounds_left > 0 else []
    needed = budget * rounds_left
    if not out and needed > n_left:
        out.append(f"campaign needs {needed} more pool structures (budget {budget} x {rounds_left} rounds) "
                   f"but the pool has {n_left} left")
    return out


def raise_problems(found: List[str]) -> None:
    """Raise one :class:`PreflightError` naming every problem (a single one as it is)."""
    if len(found) == 1:
        raise PreflightError(found[0])
    if found:
        raise PreflightError(f"{len(found)} problems: " + " | ".join(f"({i}) {p}" for i, p in enumerate(found, 1)))
