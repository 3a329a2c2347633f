"""Reading a campaign directory's state, with one-line errors (docs/design.md §8).

Every problem is a :class:`StateError` naming the file, what is wrong and how to recover, raised
before any fitting and before anything is written (``preflight.problems`` runs :func:`problems`,
so ``--dry_run`` reports them too). Recovery rules the messages rely on:
- without ``campaign.json`` a run starts at round 0 and reuses every stored selection and label;
- a deleted ``round_NNN/`` folder is redone, with every later round;
- a deleted ``labels/round_NNN/selected.json`` is drawn again (stored labels of ids drawn again
  are reused); a deleted row of ``labels.db`` is labeled again (one more oracle call).
"""

from __future__ import annotations

import errno
import json
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Tuple

from al_lightning import console

REDO_ALL = "delete it to redo every round from the stored selections and labels (no oracle call is repeated)"
ROUND_KEYS = ("round", "n_labeled", "selected_ids", "metrics")


class StateError(ValueError):
    """Corrupt or unusable campaign state (exit status 2; nothing is modified)."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "empty file" if not exc.doc.strip() else f"not JSON: {exc.msg} at line {exc.lineno}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"


def read_json(path: Path, recovery: str) -> Any:
    """The JSON in ``path``, or a StateError saying why not and ``recovery``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"{path}: unreadable ({_why(exc)}); {recovery}") from None


def _shape_problem(data: Any) -> Optional[str]:
    """What is wrong with the shape of campaign.json (None: nothing)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("rounds"), list):
        return "no 'rounds' list"
    for k, rec in enumerate(data["rounds"]):
        missing = [key for key in ROUND_KEYS if key not in rec] if isinstance(rec, dict) else ["an object"]
        if missing:
            return f"rounds[{k}] has no {', '.join(repr(m) for m in missing)}"
        if rec["round"] != k:
            return f"rounds[{k}] is numbered {rec['round']!r}"
        if not isinstance(rec["selected_ids"], list) or not all(isinstance(i, int) for i in rec["selected_ids"]):
            return f"rounds[{k}]['selected_ids'] is not a list of pool ids"
    failed = data.get("failed", [])
    if not isinstance(failed, list) or not all(isinstance(f, dict) and "id" in f for f in failed):
        return "'failed' is not a list of {id, round, error} objects"
    return None


def load_rounds(directory: Path, n_rounds: int, say: bool = True) -> Tuple[List[dict], List[dict]]:
    """(round records to resume after, failures) from ``campaign.json`` (([], []) without one).

    The last round of a finished campaign that is extended acquires now (dropped); the rounds
    stop before the first ``round_NNN/`` folder that is missing (deleted to redo it)."""
    path = Path(directory) / "campaign.json"
    if not path.exists():
        return [], []
    data = read_json(path, REDO_ALL)
    bad = _shape_problem(data)
    if bad:
        raise StateError(f"{path}: {bad}; {REDO_ALL}")
    rounds = data["rounds"]
    if rounds and rounds[-1]["round"] < n_rounds and not rounds[-1]["selected_ids"]:
        rounds = rounds[:-1]
    kept = next((k for k in range(len(rounds)) if not (Path(directory) / f"round_{k:03d}").is_dir()), len(rounds))
    if kept < len(rounds) and say:
        console.say(f"round_{kept:03d}/ is missing: redoing the campaign from round {kept}")
    return rounds[:kept], data.get("failed", [])


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why the round checkpoint ``path`` cannot be loaded, judged without reading it (None: looks fine)."""
    redo = f"delete {path.parent.name}/ to redo that round"
    if not path.is_file():
        return f"{path}: missing; {redo}"
    if path.stat().st_size == 0:
        return f"{path}: empty file; {redo}"
    if not zipfile.is_zipfile(path):
        return f"{path}: truncated or not a torch checkpoint; {redo}"
    return None


def read_selection(path: Path) -> List[int]:
    """The pool ids of ``labels/round_NNN/selected.json`` (StateError when it is not a list of ids)."""
    again = "delete it to draw that round's selection again (stored labels of ids drawn again are reused)"
    ids = read_json(path, again)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise StateError(f"{path}: not a list of pool ids; {again}")
    return ids


def read_outcome(path: Path):
    """A stored label (``<id>.extxyz``: Atoms) or failure (``<id>.failed.json``: dict), or a StateError."""
    again = "delete it to label that structure again (one more oracle call)"
    if path.suffix == ".json":
        record = read_json(path, again)
        if not isinstance(record, dict) or "error" not in record:
            raise StateError(f"{path}: not a failure record (no 'error'); {again}")
        return record
    from ase.io import read

    try:
        return read(path, format="extxyz")
    except Exception as exc:  # ase raises many types for a truncated file
        raise StateError(f"{path}: unreadable label file ({_why(exc)}); {again}") from None


def problems(directory: Path, n_rounds: int) -> List[str]:
    """Every problem of the state stored in ``directory`` that a run would stop on (one line each)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        return [f"{directory}: campaign_dir is a file, not a folder; move it away or set another campaign.campaign_dir"]
    if not directory.is_dir():
        return []
    out = [f"{p}: a file where a folder is expected; move it away (or delete it) and rerun"
           for p in sorted([*directory.glob("round_*"), directory / "labels", *directory.glob("labels/round_*"),
                            directory / "handoff"]) if p.exists() and not p.is_dir()]
    for sel in sorted(directory.glob("labels/round_*/selected.json")):
        try:
            read_selection(sel)
        except StateError as exc:
            out.append(str(exc))
    try:
        rounds, _ = load_rounds(directory, n_rounds, say=False)
    except StateError as exc:
        return out + [str(exc)]
    last = checkpoint_problem(directory / f"round_{len(rounds) - 1:03d}" / "checkpoint.pt") if rounds else None
    return out + ([last] if last else [])


def os_error_line(exc: OSError) -> str:
    """One line for a failed read or write: the file, what happened, what to do."""
    where = exc.filename or "campaign_dir"
    if exc.errno == errno.ENOSPC:
        what, fix = "the disk is full", "free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what, fix = "not writable (read-only folder or filesystem)", "make it writable or use another campaign_dir"
    else:
        what, fix = exc.strerror or str(exc), "fix the cause"
    return f"{where}: {what}; {fix}, then rerun the same command (it resumes after the last safe write)"


def failure_stop(db: Path, r: int, n_selected: int, failed: dict, max_fraction: float) -> Optional[str]:
    """The stop message when more than ``max_fraction`` of round r's ``n_selected`` labels failed
    (their rows are in the label database ``db``)."""
    if not n_selected or len(failed) <= max_fraction * n_selected:
        return None
    first = next(iter(failed.values()))
    return (f"{db}: {len(failed)} of {n_selected} labels of round {r} failed (more than "
            f"campaign.max_failed_fraction={max_fraction}; first: {first}); the failures are stored there and "
            f"never retried: fix the oracle and delete their rows (ase db {db} round={r},status=failed --delete "
            "--yes) to label those structures again, or raise campaign.max_failed_fraction to go on without them; "
            "then rerun the same command")
