"""The checks a campaign makes before it writes anything, shared by ``fit`` and ``fit --dry_run``.

:func:`problems` lists every problem it finds (one line each) instead of stopping at the first:
strategy options, missing data files, a missing foundation file, a missing pool, the oracle
import, corrupt or unusable state files (campaign/state.py) or label database (labeldb.py), a stored campaign whose
fingerprint (``fingerprint.json``, else the one in ``campaign.json``; the contents of data
files included) the config does not match and, in a dry run, a campaign directory locked by another process. ``Campaign.run``
raises them all at once (:func:`raise_problems`) before generating data or building the model;
``--dry_run`` runs the very same function, so a dry run that says OK is not refused later for a
reason these checks cover. Checks that need the data read (record validation, pool size against
budget × rounds) run afterwards, in both, too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

# fingerprint keys, in the order a refusal names them; OPTIONAL_KEYS: absent from older campaigns
FINGERPRINT_KEYS = ("data", "data_sha256", "seed", "strategy", "strategy_kwargs", "budget", "oracle", "oracle_kwargs")
OPTIONAL_KEYS = ("data_sha256", "oracle_kwargs")
FINGERPRINT_FILE = "fingerprint.json"


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
    """What a resumed run must share with the stored campaign (``cfg.seed`` already resolved):
    data (paths or the embedded spec key, and the content sha256 of every data file that exists:
    user files and the xTB data, whose MD is not bitwise reproducible across CPUs),
    seed, strategy and its options, budget, oracle and its arguments."""
    from al_lightning.campaign.fingerprint import file_sha256

    data = datamodule.files if datamodule.files is not None else (
        {"xtb": datamodule.xtb.key()} if datamodule.xtb is not None else {"emt": datamodule.emt.key()})
    out = {"data": data, "seed": cfg.seed, "strategy": cfg.strategy, "strategy_kwargs": cfg.strategy_kwargs,
           "budget": cfg.budget, "oracle": cfg.oracle, "oracle_kwargs": cfg.oracle_kwargs}
    if datamodule.xtb is not None:  # xTB MD is not bitwise the same on every CPU: hash the generated files
        datamodule.prepare_data()
    if datamodule.files is not None or datamodule.xtb is not None:
        out["data_sha256"] = {s: file_sha256(p) for s, p in datamodule.split_paths().items() if p.is_file()}
    return json.loads(json.dumps(out, default=str))  # as stored: lists, not tuples


def stored_fingerprint(directory: Path) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """(file, fingerprint) of the campaign in ``directory``: ``fingerprint.json`` (written at the
    start), else the ``fingerprint`` of ``campaign.json`` (older campaigns); (None, None) when
    neither exists. Raises ValueError (one line) for an unreadable file."""
    for name in (FINGERPRINT_FILE, "campaign.json"):
        path = Path(directory) / name
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable campaign state ({type(exc).__name__}: {exc}); restore it from a "
                             "backup or use another campaign_dir") from None
        found = data.get("fingerprint", {}) if isinstance(data, dict) and name == "campaign.json" else data
        if not isinstance(found, dict):
            raise ValueError(f"{path}: not a campaign fingerprint (a JSON object expected); restore it from a "
                             "backup or use another campaign_dir")
        return path, found
    return None, None


def _without_paths(data: Any) -> Any:
    """User-file entries without their paths (what is left: the reader options)."""
    if not isinstance(data, dict):
        return data
    return {s: {k: v for k, v in e.items() if k != "path"} if isinstance(e, dict) else None for s, e in data.items()}


def _moved_only(stored: Dict[str, Any], current: Dict[str, Any]) -> bool:
    """The same data files with the same contents (every sha256 known) at other paths."""
    old, new = stored.get("data_sha256"), current.get("data_sha256")
    return (isinstance(old, dict) and old == new and set(old) == set(current.get("data") or {})
            and _without_paths(stored.get("data")) == _without_paths(current.get("data")))


def _data_difference(stored: Dict[str, Any], current: Dict[str, Any]) -> str:
    """The user files that differ other than by path (a moved file with the same sha256 is the same)."""
    old, new = stored.get("data") or {}, current.get("data") or {}
    same_content = lambda s: (stored.get("data_sha256") or {}).get(s) == (current.get("data_sha256") or {}).get(s)  # noqa: E731
    bare_old, bare_new = _without_paths(old), _without_paths(new)
    return ", ".join(f"data file '{s}' ({bare_old.get(s)!r} vs {bare_new.get(s)!r})" for s in sorted(set(old) | set(new))
                     if bare_old.get(s) != bare_new.get(s) or (old.get(s) != new.get(s) and not same_content(s)))


def _difference(key: str, old: Any, new: Any) -> str:
    if key != "data_sha256" or not isinstance(old, dict):
        return f"{key} ({old!r} vs {new!r})"
    splits = sorted(set(old) | set(new), key=str)
    return ", ".join(f"content of data file '{s}' (sha256 {str(old.get(s))[:12]} vs {str(new.get(s))[:12]})"
                     for s in splits if old.get(s) != new.get(s))


def fingerprint_refusal(directory: Path, current: Dict[str, Any], force: bool = False) -> Optional[str]:
    """Why the campaign stored in ``directory`` refuses ``current`` (None: no stored campaign, a
    match, or ``force``). Keys an older campaign did not record are not compared; data files are
    identified by their content: the same files moved (same sha256, same reader options) match."""
    if force:
        return None
    try:
        path, stored = stored_fingerprint(directory)
    except ValueError as exc:
        return str(exc)
    if stored is None:
        return None
    changed = [k for k in FINGERPRINT_KEYS if k in current and (k in stored or k not in OPTIONAL_KEYS)
               and stored.get(k) != current[k] and not (k == "data" and _moved_only(stored, current))]
    if not changed:
        return None
    both_files = isinstance(stored.get("data"), dict) and isinstance(current.get("data"), dict) and \
        "emt" not in stored["data"] and "xtb" not in stored["data"]
    what = ", ".join(p for p in (_data_difference(stored, current) if k == "data" and both_files
                                 else _difference(k, stored.get(k), current[k]) for k in changed) if p)
    return f"{path}: the stored campaign has a different {what}; use another campaign_dir or --campaign.force true"


def write_fingerprint(directory: Path, current: Dict[str, Any]) -> Path:
    """Store ``current`` as ``<directory>/fingerprint.json`` (atomically)."""
    from al_lightning.atomic import atomic_write

    return atomic_write(Path(directory) / FINGERPRINT_FILE, lambda fh: json.dump(current, fh, indent=1))


def problems(cfg, module, datamodule, probe_lock: bool = False) -> List[str]:
    """Every problem a run would stop on before its first write (no data or model is loaded);
    ``probe_lock`` (a dry run's): also whether another process holds the campaign directory."""
    from al_lightning.acquisition.config import build_strategy

    out = problem_of(lambda: build_strategy(cfg.strategy, cfg.strategy_kwargs)) + load_problems(cfg, module, datamodule)
    if cfg.rounds > 0 and cfg.oracle not in ("stored", "file"):
        from al_lightning.oracle.factory import oracle_spec
        from al_lightning.plugins import import_object

        out += problem_of(lambda: import_object(oracle_spec(cfg.oracle, cfg.oracle_kwargs)[0]))
    if probe_lock:
        from al_lightning.campaign.lock import busy

        out += [m for m in [busy(cfg.directory)] if m]
    from al_lightning.campaign import labeldb, state

    out += state.problems(cfg.directory, cfg.rounds) + labeldb.problems(cfg.directory)
    if cfg.oracle == "file" and Path(cfg.directory).is_dir():  # a labels file waiting for the rerun
        from al_lightning.oracle.handoff import pending_labels_problem

        pending: List[str] = []  # the labels file's problem, or an unreadable request / labels file
        out += problem_of(lambda: pending.extend(m for m in [pending_labels_problem(
            cfg.directory, cfg.handoff_energy_key, cfg.handoff_forces_key)] if m)) + pending
    refusal = fingerprint_refusal(cfg.directory, campaign_fingerprint(cfg, datamodule), cfg.force)
    return out + ([refusal] if refusal else [])


def load_problems(cfg, module, datamodule) -> List[str]:
    """Why the data or the model cannot be loaded at all: missing data files, a missing
    foundation file, no pool for rounds > 0 (part of :func:`problems`)."""
    from al_lightning.model.mace import SHIPPED_BACKBONES, foundation_path

    paths, missing = datamodule.split_paths(), set(datamodule.missing_files())
    out = [f"data file for split '{s}' not found: {p}" for s, p in paths.items() if p in missing]
    foundation = module.hparams.foundation
    if foundation and not foundation_path(foundation).is_file():
        out.append(f"foundation model file not found: {foundation} (model.foundation: a .model file or a shipped "
                   f"backbone's name, {' / '.join(SHIPPED_BACKBONES)})")
    if cfg.rounds > 0 and "pool" not in paths:
        out.append("campaign.rounds > 0 needs a 'pool' split in data.files")
    return out


def cannot_load(cfg, module, datamodule) -> bool:
    """True when the data or the model cannot be loaded at all (so later checks cannot run)."""
    return bool(load_problems(cfg, module, datamodule))


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


def check_pool_records(cfg, datamodule) -> None:
    """Every pool record readable with finite coordinates (and labels, for stored labels), checked
    once per file content (cached by its sha256): bad ones stop the run in one line (DataError), or
    are left out with a warning (``data.skip_bad_records``)."""
    if cfg.rounds == 0:
        return
    from al_lightning import console
    from al_lightning.campaign.fingerprint import file_sha256
    from al_lightning.data.cache import cache_root
    from al_lightning.data.io import DataError
    from al_lightning.data.validate import bad_records, bad_records_line

    pool = datamodule.structure_file("pool")
    labels = cfg.oracle == "stored"
    paths = [pool.path] if isinstance(pool.path, Path) else list(getattr(pool, "chunks", []))
    key = "-".join(file_sha256(p)[:16] for p in paths)
    cache = cache_root() / "validated" / f"{key}-{'labels' if labels else 'plain'}.json" if key else None
    bad = bad_records(pool, labels, cache)
    if bad and not datamodule.skip_bad_records:
        raise DataError(bad_records_line(pool.path, bad))
    if bad:
        console.say(f"warning: {bad_records_line(pool.path, bad).split('; fix the file')[0]}: left out "
                    "(data.skip_bad_records)")
        datamodule.exclude(bad)
