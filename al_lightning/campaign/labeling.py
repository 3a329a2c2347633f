"""Labeling that never loses or repeats a label (docs/design.md §8; rank 0 only).

Per acquisition round r, ``<campaign_dir>/labels/round_rrr/selected.json`` holds the ids (written
before any oracle call); every outcome — a label or a failure, with the pool id and the pool
structure's hash — is one row of ``<campaign_dir>/labels.db`` (an ASE database, :mod:`labeldb`),
committed before the label is used. A resumed run checks the rows against the pool, reads them back
and calls the oracle only for ids without one. ``oracle_calls.jsonl`` logs every oracle call (a
history: it keeps calls whose row was deleted to label again). Structures failing the sanity
filter (atoms too close, predicted forces too large) never reach the oracle.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ase import Atoms

from al_lightning import console, faults
from al_lightning import keys as K
from al_lightning.campaign import interrupts, labeldb
from al_lightning.campaign.fingerprint import structure_hash
from al_lightning.campaign.outputs import write_json
from al_lightning.campaign.state import read_selection
from al_lightning.data.io import DataError
from al_lightning.oracle import OracleError


class StoredLabelMismatch(ValueError):
    """A stored label or failure does not belong to the pool structure it is filed under (status 2)."""


class LabelStore:
    """One campaign's selections (``labels/round_NNN/selected.json``) and outcomes (``labels.db``)."""

    def __init__(self, campaign_dir: Path) -> None:
        self.root = campaign_dir / "labels"
        self.path = campaign_dir / labeldb.DB_NAME
        self.log_path = campaign_dir / "oracle_calls.jsonl"
        self._db = None  # one database handle per run
        self._checked = False  # every row validated once per run; then per-round queries

    def database(self):
        """The run's handle of ``labels.db`` (:func:`labeldb.connect`, opened once)."""
        if self._db is None:
            self._db = labeldb.connect(self.path)
        return self._db

    def round_dir(self, r: int) -> Path:
        return self.root / f"round_{r:03d}"

    def load_selection(self, r: int) -> Optional[List[int]]:
        path = self.round_dir(r) / "selected.json"
        return read_selection(path) if path.exists() else None

    def save_selection(self, r: int, ids: Sequence[int]) -> None:
        write_json(self.round_dir(r) / "selected.json", [int(i) for i in ids])

    def outcomes(self, r: int) -> Dict[int, labeldb.Outcome]:
        """Round r's stored outcomes by pool id (labels.db; per-file labels of an older campaign until
        imported). The first read of a run validates every row; later ones select round r in SQL."""
        if not self.path.exists():
            return {o.pool_id: o for o in labeldb.read_legacy(self.root) if o.round == r}
        if not self._checked:
            labeldb.read_db(self.path, db=self.database())  # every row, label hashes included
            migrated = labeldb.add_missing_label_hashes(self.database())
            if migrated:
                console.say(f"{self.path}: {migrated} label(s) written before label hashes existed now carry one "
                            "(computed from the labels as stored)")
            self._checked = True
        found = labeldb.read_db(self.path, round_=r, db=self.database(), check=False)
        return {o.pool_id: o for o in found}

    def stored(self, r: int) -> Tuple[Dict[int, Atoms], Dict[int, str]]:
        """(labels by id, failure messages by id) already stored for round r."""
        found = self.outcomes(r).values()
        return ({o.pool_id: o.atoms for o in found if o.atoms is not None},
                {o.pool_id: o.error for o in found if o.atoms is None})

    def save_label(self, r: int, pool_id: int, atoms: Atoms, oracle: str, structure: Optional[str] = None,
                   seconds: Optional[float] = None) -> None:
        """Store one label (one row) with its pool id and the pool structure's :func:`structure_hash`."""
        atoms.info["pool_id"] = int(pool_id)
        if structure:
            atoms.info["structure_hash"] = structure
        self._save(r, pool_id, atoms, None, oracle, structure, seconds)

    def save_failure(self, r: int, pool_id: int, error: str, oracle: Optional[str],
                     structure: Optional[str] = None, seconds: Optional[float] = None) -> None:
        """Store one failure (``oracle`` None: the sanity filter kept the structure from the oracle)."""
        self._save(r, pool_id, None, error, oracle, structure, seconds)

    def _save(self, r, pool_id, atoms, error, oracle, structure, seconds) -> None:
        with interrupts.deferred():  # the row and its log line, or neither
            if not self.path.exists():
                legacy = labeldb.read_legacy(self.root)
                if legacy:
                    labeldb.import_legacy(self.path, legacy, self.log_path)
            digest = None if atoms is None else \
                labeldb.label_hash(structure, atoms.info[K.REF_ENERGY], atoms.arrays[K.REF_FORCES])
            try:
                labeldb.write_outcome(self.database(), r, pool_id, atoms, error, oracle, structure, seconds, digest)
            except sqlite3.OperationalError as exc:  # "database or disk is full": a one-line OSError naming the file
                if "full" not in str(exc):
                    raise
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path)) from None
            if oracle is not None:
                self._log(r, pool_id, oracle, "ok" if atoms is not None else "failed", digest)

    def verify(self, r: int, hashes: Dict[int, str]) -> None:
        """Raise StoredLabelMismatch (one line, naming the row or file) when a stored outcome of round r
        carries another pool id than it is filed under or was computed for another structure than
        ``hashes[pool id]`` (outcomes stored before hashes were recorded are not checked)."""
        found = self.outcomes(r)
        for pool_id, want in hashes.items():
            o = found.get(int(pool_id))
            if o is None:
                continue
            again = f"delete the row (ase db {self.path} id={o.row_id} --delete --yes)" if o.row_id else \
                "delete the file"
            if o.stored_id is not None and o.stored_id != int(pool_id):
                raise StoredLabelMismatch(f"{o.where}: carries pool id {o.stored_id}, not {pool_id}; {again} "
                                          "to label that structure again")
            if o.structure_hash is not None and o.structure_hash != want:
                raise StoredLabelMismatch(
                    f"{o.where}: stored for another structure than pool id {pool_id} of the current pool (structure "
                    f"hash differs: the pool changed); restore the pool file, or {again} to label it again")

    def _log(self, r: int, pool_id: int, oracle: str, status: str, digest: Optional[str] = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"round": r, "id": int(pool_id), "oracle": oracle, "status": status}
        with open(self.log_path, "a") as log:
            log.write(json.dumps({**entry, **({"label_hash": digest} if digest else {})}) + "\n")
            log.flush()
            os.fsync(log.fileno())


def sanity_problem(atoms: Atoms, min_distance: Optional[float], max_force: Optional[float],
                   predicted_max_force: Optional[float]) -> Optional[str]:
    """Why ``atoms`` should not be labelled (None when it passes)."""
    if min_distance:
        from ase.neighborlist import neighbor_list

        d = neighbor_list("d", atoms, float(min_distance))
        if len(d):
            return f"sanity filter: atoms {float(d.min()):.3f} Å apart (< {min_distance} Å)"
    if max_force and predicted_max_force is not None and predicted_max_force > max_force:
        return f"sanity filter: predicted max |F| {predicted_max_force:.2f} eV/Å (> {max_force})"
    return None


def predicted_max_forces(module, datamodule, ids: List[int]) -> Dict[int, float]:
    """Max predicted |F| per pool id (for the sanity filter), on CPU."""
    out = {}
    from al_lightning.model.mace import on_device

    with on_device(module.net, "cpu") as net:
        for batch in datamodule.pool_dataloader(ids):
            forces = net(batch.to_dict(), training=False, compute_force=True)["forces"].detach()
            norms = forces.norm(dim=1)
            for g, sid in enumerate(batch["structure_id"].tolist()):
                out[int(sid)] = float(norms[batch["batch"] == g].max())
    return out


def label_round(store: LabelStore, r: int, ids: Sequence[int], structures: Sequence[Atoms], oracle,
                oracle_name: str, sanity: Callable[[int, Atoms], Optional[str]]
                ) -> Tuple[List[int], List[Atoms], Dict[int, str]]:
    """Label the ids without a stored outcome; returns (ids labelled, their labels, failures) in id order."""
    from tqdm.auto import tqdm

    hashes = {int(i): structure_hash(a) for i, a in zip(ids, structures)}
    store.verify(r, hashes)
    labels, failed = store.stored(r)
    todo = [(i, a) for i, a in zip(ids, structures) if i not in labels and i not in failed]
    if todo and oracle.batch_only:
        t0 = time.perf_counter()
        got = oracle.label([i for i, _ in todo], [a for _, a in todo])
        share = (time.perf_counter() - t0) / len(todo)
        for i, out in zip([i for i, _ in todo], got):
            store.save_label(r, i, out, oracle_name, hashes[i], share)
            labels[i] = out
        todo = []
    for i, atoms in tqdm(todo, desc=f"labeling round {r}", leave=False, disable=None if todo else True):  # None: no TTY, no bar
        problem = sanity(i, atoms)
        if problem:
            store.save_failure(r, i, problem, None, hashes[i])
            failed[i] = problem
            continue
        t0 = time.perf_counter()
        try:
            out = oracle.label([i], [atoms])[0]
        except (OracleError, DataError) as exc:
            store.save_failure(r, i, str(exc).splitlines()[0], oracle_name, hashes[i], time.perf_counter() - t0)
            failed[i] = str(exc).splitlines()[0]
            continue
        store.save_label(r, i, out, oracle_name, hashes[i], time.perf_counter() - t0)
        labels[i] = out
        faults.hit("label")
    done = [i for i in ids if i in labels]
    return done, [labels[i] for i in done], {i: failed[i] for i in ids if i in failed}
