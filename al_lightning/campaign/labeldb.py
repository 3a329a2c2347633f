"""The label store's database: ``<campaign_dir>/labels.db``, an ASE database (docs/design.md §8).

One row per labeling outcome, with key-value pairs ``pool_id``, ``round``, ``status``
(``labeled`` / ``failed``), ``error`` (failed only), ``structure_hash``, ``oracle`` (absent for a
structure the sanity filter kept from the oracle) and ``seconds`` (the oracle call's wall time).
A label is the row's calculator results (``energy`` and raw ``forces``: constraints not applied,
as in the extxyz files), the structure's other info and per-atom arrays its ``data``. Each outcome
is one SQLite transaction (busy timeout :data:`BUSY_MS`); ASE's own lock file is off: a kill -9
would leave it behind and block every later write (the campaign lock and SQLite's locking suffice).

Campaigns written before the database (``labels/round_NNN/<id>.extxyz`` / ``<id>.failed.json``)
are read from those files until their first new outcome, which imports all of them into
``labels.db`` in one step (a temp database renamed into place); the files are kept, no longer read.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from ase import Atoms

from al_lightning import console
from al_lightning import faults
from al_lightning.campaign.state import StateError, read_outcome

DB_NAME = "labels.db"
BUSY_MS = 60_000
STATUSES = ("labeled", "failed")
REF_ENERGY, REF_FORCES = "REF_energy", "REF_forces"
_IDENTITY = ("pool_id", "structure_hash")  # kept as key-value pairs, given back in ``info``
_NATIVE = ("numbers", "positions", "initial_magmoms", "initial_charges", "masses", "tags", "momenta")


@dataclass
class Outcome:
    """One stored outcome: a label (``atoms``) or a failure (``error``) of pool id ``pool_id``."""

    round: int
    pool_id: int
    where: str  # for messages: "<db>: row N" or the legacy file
    atoms: Optional[Atoms] = None
    error: Optional[str] = None
    structure_hash: Optional[str] = None
    stored_id: Optional[int] = None  # the pool id a legacy file carries
    row_id: Optional[int] = None  # the database row


def connect(path: Path):
    """The ASE database at ``path`` (SQLite, no ASE lock file); a file whose schema was never
    finished and that holds no row (its creation hit a full disk) is replaced by a new one."""
    import ase.db

    if _unfinished_and_empty(Path(path)):
        Path(path).unlink()
        console.say(f"{path}: its tables were never all created (a full disk?) and it holds no label: created afresh")
    return ase.db.connect(str(path), type="db", use_lock_file=False)


def _unfinished_and_empty(path: Path) -> bool:
    """True for a database without ASE's ``information`` table (written last when ASE creates its
    tables) and without any row in ``systems``: nothing was ever stored in it."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(str(path), timeout=BUSY_MS / 1000)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rows = con.execute("SELECT COUNT(*) FROM systems").fetchone()[0] if "systems" in tables else 0
        finally:
            con.close()
    except sqlite3.Error:
        return False  # unreadable: the checks of read_db say so, nothing is removed
    return "information" not in tables and rows == 0


def _text(value: str) -> str:
    """A string ASE stores as a string (it refuses strings that read as numbers or booleans)."""
    try:
        float(value)
    except ValueError:
        return value if value.strip().lower() not in ("true", "false") else f"'{value}'"
    return f"'{value}'"


def _plain(value):
    """``value`` with numpy scalars as Python numbers (ASE's encoder refuses them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _row_of_label(atoms: Atoms):
    """(Atoms with a SinglePointCalculator of the raw label, the rest of its info and arrays as data)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    work = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, constraint=atoms.constraints)
    for name in _NATIVE[2:]:
        if name in atoms.arrays:
            work.arrays[name] = atoms.arrays[name].copy()
    info = {k: _plain(v) for k, v in atoms.info.items() if k not in (REF_ENERGY, *_IDENTITY)}
    arrays = {k: v for k, v in atoms.arrays.items() if k not in (REF_FORCES, *_NATIVE)}
    work.calc = SinglePointCalculator(work, energy=float(atoms.info[REF_ENERGY]),
                                      forces=np.array(atoms.arrays[REF_FORCES], dtype=float))
    return work, {"info": info, "arrays": arrays}


def label_hash(structure: Optional[str], energy: float, forces) -> str:
    """``sha256:<16 hex>`` content hash of one label: the pool structure's hash, the energy and the raw
    forces (float64). The prefix is needed: ASE's database refuses a string value that reads as a
    number, which a bare hex digest does about once in 700 labels (``92676e9520126895``)."""
    import hashlib

    h = hashlib.sha256(str(structure or "").encode())
    h.update(np.float64(energy).tobytes())
    h.update(np.ascontiguousarray(forces, dtype=np.float64).tobytes())
    return "sha256:" + h.hexdigest()[:16]


def _hash_matches(row) -> bool:
    """The row's label equals its stored label hash (stored bare, without ``sha256:``, before 2026-12-08)."""
    return label_hash(row.get("structure_hash"), row.energy, row.forces).removeprefix("sha256:") == \
        str(row.label_hash).removeprefix("sha256:")


def write_outcome(db, r: int, pool_id: int, atoms: Optional[Atoms], error: Optional[str],
                  oracle: Optional[str], structure: Optional[str], seconds: Optional[float],
                  digest: Optional[str] = None) -> int:
    """One outcome as one row, in one transaction; returns the row id. ``digest``: the label's
    :func:`label_hash` when the caller has it already."""
    kvp = {"pool_id": int(pool_id), "round": int(r), "status": "labeled" if atoms is not None else "failed"}
    if error is not None:
        kvp["error"] = _text(error)
    if oracle:
        kvp["oracle"] = _text(oracle)
    if structure:
        kvp["structure_hash"] = structure
    if seconds is not None:
        kvp["seconds"] = round(float(seconds), 3)
    if atoms is not None:  # written in the same transaction as the label it vouches for
        kvp["label_hash"] = digest or label_hash(structure, atoms.info[REF_ENERGY], atoms.arrays[REF_FORCES])
    row_atoms, data = _row_of_label(atoms) if atoms is not None else (Atoms(), {})
    with db:  # one connection, committed on exit (rolled back on an exception)
        db.connection.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        row_id = db.write(row_atoms, key_value_pairs=kvp, data=data)
        faults.hit("db")  # a kill here: SQLite rolls the row back
        return row_id


def _label_of_row(row) -> Atoms:
    atoms = row.toatoms()
    atoms.calc = None
    data = row.get("data") or {}
    atoms.info.update(data.get("info", {}))
    for k, v in data.get("arrays", {}).items():
        atoms.arrays[k] = np.asarray(v)
    atoms.info[REF_ENERGY] = float(row.energy)
    atoms.arrays[REF_FORCES] = np.array(row.forces, dtype=float)  # raw: not atoms.get_forces()
    atoms.info["pool_id"] = int(row.pool_id)
    if row.get("structure_hash"):
        atoms.info["structure_hash"] = row.structure_hash
    return atoms


def _row_problem(row) -> Optional[str]:
    kvp = row.key_value_pairs
    if not all(isinstance(kvp.get(k), int) for k in ("pool_id", "round")) or kvp.get("status") not in STATUSES:
        return "has no integer pool_id and round and a status of labeled or failed"
    if kvp["status"] == "failed" and "error" not in kvp:
        return "is a failure without an error"
    if kvp["status"] == "labeled" and (row.get("energy") is None or row.get("forces") is None):
        return "is a label without energy and forces"
    return None


def unreadable(path: Path, why: str) -> StateError:
    return StateError(f"{path}: unreadable label database ({why}); restore it from a backup, or move it away to "
                      "label every stored structure again (one more oracle call each)")


def _check_file(path: Path) -> bool:
    """SQLite's own check of ``path`` and that it is an ASE database (a StateError when not); False
    for a database without any table or with an unfinished schema and no row (its first write never
    finished, e.g. on a full disk): empty."""
    try:
        con = sqlite3.connect(str(path), timeout=BUSY_MS / 1000)
        try:
            check = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise unreadable(path, f"{type(exc).__name__}: {exc}") from None
    if check != ["ok"]:
        raise unreadable(path, f"SQLite integrity check: {check[0]}")
    if not tables or _unfinished_and_empty(path):
        return False  # nothing stored yet (its first write never finished): empty
    if "systems" not in tables:
        raise unreadable(path, "not an ASE database: no 'systems' table")
    return True


def read_db(path: Path, round_: Optional[int] = None, db=None, check: bool = True) -> List[Outcome]:
    """The outcomes stored in the database ``path`` ([] without one), or a StateError: every row, or
    round ``round_``'s only (selected by SQLite); ``db``: an open :func:`connect` of ``path``;
    ``check``: run SQLite's integrity check first (a per-round read after a full one skips it)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    if check and not _check_file(path):
        return []  # no schema yet: the first write creates it
    try:
        rows = list((db or connect(path)).select(**({} if round_ is None else {"round": int(round_)})))
    except Exception as exc:  # sqlite3 or ase decoding errors
        raise unreadable(path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") \
            from None
    out, seen = [], {}
    for row in rows:
        where = f"{path}: row {row.id}"
        bad = _row_problem(row)
        if bad:
            raise StateError(f"{where} {bad}; delete it (ase db {path} id={row.id} --delete --yes) to label "
                             "that structure again")
        key = (row.round, row.pool_id)
        if key in seen:
            raise StateError(f"{where} stores round {row.round} pool id {row.pool_id} again (as row {seen[key]}); "
                             f"delete one (ase db {path} id={row.id} --delete --yes)")
        seen[key] = row.id
        if row.status == "labeled" and row.get("label_hash") is not None and not _hash_matches(row):
            raise StateError(f"{where}: the label of pool id {row.pool_id} (round {row.round}) does not match its "
                             f"label hash: it was changed after it was written; delete the row (ase db {path} "
                             f"id={row.id} --delete --yes) to label that structure again")
        label = _label_of_row(row) if row.status == "labeled" else None
        out.append(Outcome(row.round, row.pool_id, where, label, row.get("error"), row.get("structure_hash"),
                           row_id=row.id))
    return out


def add_missing_label_hashes(db) -> int:
    """Give labels written before label hashes existed their hash (from the row as it is now); the
    number of rows updated."""
    rows = [row for row in db.select(status="labeled") if row.get("label_hash") is None]
    with db:
        for row in rows:
            db.update(row.id, label_hash=label_hash(row.get("structure_hash"), row.energy, row.forces))
    return len(rows)


def problems(directory: Path) -> List[str]:
    """The label database's problem (one line; [] when it is fine or absent)."""
    path = Path(directory) / DB_NAME
    if not Path(directory).is_dir() or not path.exists():
        return []
    if not path.is_file():
        return [f"{path}: not a file; move it away (or delete it) and rerun"]
    try:
        read_db(path)
    except StateError as exc:
        return [str(exc)]
    return []


def read_legacy(root: Path) -> List[Outcome]:
    """The per-file outcomes under ``labels/round_NNN/`` of a campaign written before labels.db."""
    out = []
    for d in sorted(root.glob("round_*")):
        r = int(d.name.split("_")[-1]) if d.name.split("_")[-1].isdigit() else None
        for path in ([] if r is None else sorted([*d.glob("*.extxyz"), *d.glob("*.failed.json")])):
            if not path.name.split(".")[0].isdigit():
                continue
            found = read_outcome(path)
            info = found if path.suffix == ".json" else found.info
            stored = info.get("pool_id", info.get("id"))
            out.append(Outcome(r, int(path.name.split(".")[0]), str(path), None if path.suffix == ".json" else found,
                               found.get("error") if path.suffix == ".json" else None, info.get("structure_hash"),
                               None if stored is None else int(stored)))
    return out


def _logged_oracles(log: Path) -> Dict[tuple, str]:
    """(round, pool id) → oracle name, from the call log of a campaign written before labels.db."""
    out = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            rec = json.loads(line)
            out[(int(rec["round"]), int(rec["id"]))] = str(rec["oracle"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash
    return out


def import_legacy(path: Path, outcomes: List[Outcome], log: Path) -> None:
    """Write ``outcomes`` (read from per-file labels) into a new database at ``path``, all or nothing."""
    tmp = path.with_name(f".{path.name}.import")
    tmp.unlink(missing_ok=True)
    oracles = _logged_oracles(log)
    db = connect(tmp)
    for o in outcomes:
        write_outcome(db, o.round, o.pool_id, o.atoms, o.error, oracles.get((o.round, o.pool_id)),
                      o.structure_hash, None)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    console.say(f"imported {len(outcomes)} label and failure files of labels/round_NNN/ into "
                f"{path} (the files are kept, no longer read)")
