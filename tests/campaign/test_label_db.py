"""The label store is an ASE database (issue 14 item 0): ``ase db`` lists every outcome, a kill -9
inside a row's transaction leaves it consistent, and per-file campaigns are imported on resume."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.constraints import FixAtoms

from al_lightning.campaign import labeldb
from al_lightning.campaign.labeling import LabelStore, label_round
from al_lightning.cli import main
from al_lightning.data.io import write_extxyz
from al_lightning.oracle import Oracle

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = ["--trainer.max_epochs=1", "--campaign.rounds=1", "--campaign.export_models=false",
        "--campaign.strategy=pv_topb", "--campaign.strategy_kwargs={batch_size: 16, calibration: false}"]


def _args(d: Path):
    return ["fit", "-c", SMOKE, *FAST, f"--campaign.campaign_dir={d}"]


def _ase_db(path: Path, *query: str) -> str:
    cmd = [sys.executable, "-m", "ase", "db", str(path), *query, "-c", "id,pool_id,round,status,oracle", "--limit=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _listed_ids(out: str):
    rows = [line.split("|") for line in out.splitlines()[1:] if line.count("|") == 4]
    return sorted(int(r[1]) for r in rows)


def _result(d: Path):
    state = json.loads((d / "campaign.json").read_text())
    calls = [json.loads(x)["id"] for x in (d / "oracle_calls.jsonl").read_text().splitlines()]
    return [r["selected_ids"] for r in state["rounds"]], calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("labeldb") / "ref"
    os.environ.pop("AL_FAULT", None)
    with contextlib.chdir(d.parent):
        assert main(_args(d)) == 0
    return d


class _Oracle(Oracle):
    """Labels with zero energy and given forces; fails on pool id 3."""

    def label(self, ids, structures):
        if 3 in ids:
            from al_lightning.oracle import OracleError

            raise OracleError("no SCF convergence")
        out = [a.copy() for a in structures]
        for a in out:
            a.info["REF_energy"] = -1.0
            a.arrays["REF_forces"] = np.arange(3 * len(a), dtype=float).reshape(-1, 3)
        return out


def test_ase_db_lists_every_outcome_with_raw_forces(tmp_path, reference):
    """Labels, oracle failures and sanity-filter failures are rows; FixAtoms leaves the forces raw."""
    slab = fcc111("Cu", (2, 2, 2), vacuum=4.0)
    slab.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    store = LabelStore(tmp_path)
    sanity = lambda i, a: "sanity filter: too close" if i == 5 else None  # noqa: E731
    done, _, failed = label_round(store, 0, [1, 3, 5, 8], [slab, bulk("Cu"), bulk("Al"), slab.copy()], _Oracle(),
                                  "zero", sanity)
    assert done == [1, 8] and sorted(failed) == [3, 5]
    assert _listed_ids(_ase_db(store.path)) == [1, 3, 5, 8]
    assert _listed_ids(_ase_db(store.path, "status=failed")) == [3, 5]
    assert _listed_ids(_ase_db(store.path, "oracle=zero")) == [1, 3, 8]  # the sanity failure reached no oracle
    label = store.stored(0)[0][1]
    assert np.array_equal(label.arrays["REF_forces"], np.arange(24.0).reshape(8, 3))  # fixed atoms keep forces
    assert label.constraints and label.info["pool_id"] == 1 and label.info["structure_hash"].startswith("sha256:")
    row = labeldb.connect(store.path).get(pool_id=3)
    assert row.error == "no SCF convergence" and row.seconds >= 0 and row.structure_hash.startswith("sha256:")
    ref_ids = json.loads((reference / "labels" / "round_000" / "selected.json").read_text())
    assert _listed_ids(_ase_db(reference / "labels.db", "status=labeled")) == sorted(ref_ids)


def test_kill_inside_a_row_transaction_leaves_the_db_consistent(tmp_path, reference, monkeypatch):
    d = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "AL_FAULT": "db:3"}
    killed = subprocess.run([sys.executable, "-m", "al_lightning.cli", *_args(d)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    logged = [json.loads(x)["id"] for x in (d / "oracle_calls.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and labeldb.problems(d) == []  # opens; SQLite rolled the third row back
    rows = labeldb.read_db(d / "labels.db")
    assert sorted(o.pool_id for o in rows) == sorted(logged) and labeldb.connect(d / "labels.db").count() == 2
    assert all(o.atoms is not None and o.atoms.arrays["REF_forces"].shape == (len(o.atoms), 3) for o in rows)
    monkeypatch.chdir(tmp_path)
    assert main(_args(d)) == 0
    selections, calls = _result(d)
    assert selections == _result(reference)[0] and sorted(calls) == sorted(i for s in selections for i in s)
    assert labeldb.connect(d / "labels.db").count() == len(calls)


def _to_files(d: Path) -> None:
    """Rewrite labels.db as the per-file store of campaigns written before it, then remove it."""
    for o in labeldb.read_db(d / "labels.db"):
        rdir = d / "labels" / f"round_{o.round:03d}"
        if o.atoms is not None:
            write_extxyz(rdir / f"{o.pool_id}.extxyz", [o.atoms])
        else:
            (rdir / f"{o.pool_id}.failed.json").write_text(json.dumps({"id": o.pool_id, "round": o.round,
                                                                        "error": o.error}))
    (d / "labels.db").unlink()


def test_per_file_campaign_is_imported_on_its_first_new_label(tmp_path, reference, monkeypatch, capsys):
    """Stored files are reused (no oracle call), imported into labels.db with the first new label and
    kept; labels.db then holds every outcome."""
    d = tmp_path / "c"
    shutil.copytree(reference, d)
    _to_files(d)
    (d / "campaign.json").unlink()  # round 0 resumes from its stored labels
    files = sorted((d / "labels" / "round_000").glob("*.extxyz"))
    files[-1].unlink()  # one label to buy again
    before = (d / "oracle_calls.jsonl").read_text()
    monkeypatch.chdir(tmp_path)
    assert main(_args(d)) == 0
    assert "imported 7 label and failure files of labels/round_NNN/ into" in capsys.readouterr().err
    selections, calls = _result(d)
    assert selections == _result(reference)[0] and calls[len(before.splitlines()):] == [int(files[-1].name[:-7])]
    assert _listed_ids(_ase_db(d / "labels.db")) == sorted(selections[0]) and all(p.exists() for p in files[:-1])


def test_a_database_whose_first_write_never_committed_is_empty(tmp_path):
    """A full disk during the very first label write leaves labels.db with an SQLite header but no
    table: it holds no label, so it is read as empty and the next write creates the schema."""
    import sqlite3

    store = LabelStore(tmp_path)
    con = sqlite3.connect(store.path)
    con.execute("CREATE TABLE t (x)")
    con.execute("DROP TABLE t")
    con.commit()
    con.close()
    assert store.path.stat().st_size > 0 and labeldb.problems(tmp_path) == [] and store.outcomes(0) == {}
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"], atoms.arrays["REF_forces"] = -1.5, np.zeros((1, 3))
    store.save_label(0, 4, atoms, "emt")
    assert LabelStore(tmp_path).outcomes(0)[4].atoms.info["REF_energy"] == -1.5


def test_a_database_whose_tables_were_cut_by_a_full_disk_is_created_afresh(tmp_path, capsys):
    """What a 64 KB tmpfs leaves (seen on a real one): ASE's tables without ``information``, which it
    writes last, and no row. Nothing is stored, so it is replaced; with a row it is refused instead."""
    import sqlite3

    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"], atoms.arrays["REF_forces"] = -1.5, np.zeros((1, 3))
    store = LabelStore(tmp_path)
    store.save_label(0, 4, atoms, "emt")
    con = sqlite3.connect(store.path)
    con.execute("DROP TABLE information")
    con.execute("DELETE FROM systems")
    con.commit()
    con.close()
    fresh = LabelStore(tmp_path)
    assert labeldb.problems(tmp_path) == [] and fresh.outcomes(0) == {}
    fresh.save_label(0, 5, atoms, "emt")
    assert "never all created" in capsys.readouterr().err
    assert set(LabelStore(tmp_path).outcomes(0)) == {5}
    con = sqlite3.connect(store.path)
    con.execute("DROP TABLE information")  # a row, but no information table: not ours to remove
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="unreadable label database"):
        LabelStore(tmp_path).outcomes(0)


def test_sqlite_full_disk_is_an_os_error_naming_the_database(tmp_path, monkeypatch):
    import errno
    import sqlite3

    from al_lightning.campaign.state import os_error_line

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(labeldb, "write_outcome", full)
    store = LabelStore(tmp_path)
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"], atoms.arrays["REF_forces"] = -1.5, np.zeros((1, 3))
    with pytest.raises(OSError) as info:
        store.save_label(0, 4, atoms, "emt")
    assert info.value.errno == errno.ENOSPC
    assert os_error_line(info.value).startswith(f"{store.path}: the disk is full; free some space")
    assert not (tmp_path / "oracle_calls.jsonl").exists()  # nothing logged for a label that was not stored


def test_a_label_edited_in_the_database_is_refused_on_resume(tmp_path, monkeypatch, capsys):
    """Each label row carries a hash of (structure hash, energy, forces), also in oracle_calls.jsonl;
    a label edited afterwards (a real SQLite UPDATE) is refused in one line naming the pool id and
    round (status 2); deleting the row relabels that structure."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    out = tmp_path / "c"
    args = ["fit", "-c", smoke, "--trainer.max_epochs=1", f"--campaign.campaign_dir={out}"]
    assert main([*args, "--campaign.rounds=1"]) == 0
    calls = [json.loads(x) for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    assert all(c["label_hash"].startswith("sha256:") and len(c["label_hash"]) == 23 for c in calls)
    row = next(iter(labeldb.connect(out / labeldb.DB_NAME).select(status="labeled")))
    con = sqlite3.connect(out / labeldb.DB_NAME)
    con.execute("UPDATE systems SET energy = energy + 10 WHERE id = ?", (row.id,))
    con.commit()
    con.close()
    assert main([*args, "--campaign.rounds=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"row {row.id}: the label of pool id {row.pool_id} (round {row.round}) does not match its label hash" in err
    labeldb.connect(out / labeldb.DB_NAME).delete([row.id])  # a deliberate relabel
    assert main([*args, "--campaign.rounds=2"]) == 0


def _one_stored_label(tmp_path, energy=-1.5, forces=None):
    """A label store in ``tmp_path`` with one Cu label (round 0, pool id 4, structure hash "abc"):
    (database, its row)."""
    store = LabelStore(tmp_path)
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.info["REF_energy"] = energy
    atoms.arrays["REF_forces"] = np.full((1, 3), 0.25) if forces is None else forces
    store.save_label(0, 4, atoms, "emt", structure="abc")
    db = labeldb.connect(store.path)
    return db, next(iter(db.select()))


def test_labels_from_before_label_hashes_are_migrated_with_one_notice(tmp_path, capsys):
    db, row = _one_stored_label(tmp_path)
    db.update(row.id, delete_keys=["label_hash"])  # as written by an older version
    fresh = LabelStore(tmp_path)
    assert fresh.outcomes(0)[4].atoms.info["REF_energy"] == -1.5
    assert "1 label(s) written before label hashes existed now carry one" in capsys.readouterr().err
    assert next(iter(db.select())).label_hash == labeldb.label_hash("abc", -1.5, np.full((1, 3), 0.25))


def _number_like_digest():
    """A label (energy, forces) whose bare 16-hex digest reads as a number (e.g. ``92676e9520126895``):
    about 1 label in 700 (found in a tuning campaign)."""
    from ase.db.core import str_represents

    forces = np.full((1, 3), 0.25)
    for k in range(200_000):
        energy = -1.0 - 1e-4 * k
        bare = labeldb.label_hash("abc", energy, forces).removeprefix("sha256:")
        if str_represents(bare, int) or str_represents(bare, float):
            return energy, forces, bare
    raise AssertionError("no number-like digest found")


def test_a_label_whose_digest_reads_as_a_number_is_stored_and_verified(tmp_path):
    energy, forces, bare = _number_like_digest()
    _, row = _one_stored_label(tmp_path, energy, forces)  # ASE refused a bare number-like string here
    assert LabelStore(tmp_path).outcomes(0)[4].atoms.info["REF_energy"] == energy
    assert row.label_hash == "sha256:" + bare


def test_bare_label_hashes_of_earlier_versions_still_verify(tmp_path):
    db, row = _one_stored_label(tmp_path)
    db.update(row.id, label_hash=row.label_hash.removeprefix("sha256:") + "x")  # a hash that does not match
    with pytest.raises(Exception, match="does not match its label hash"):
        LabelStore(tmp_path).outcomes(0)
    db.update(row.id, label_hash=row.label_hash.removeprefix("sha256:"))  # as written before the prefix
    assert LabelStore(tmp_path).outcomes(0)[4].atoms.info["REF_energy"] == -1.5
