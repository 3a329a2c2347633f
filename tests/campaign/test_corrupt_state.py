"""Corrupt or unusable campaign state (issue 14 item 6): one line naming the file, what is wrong and
how to recover; exit status 2, before any fitting, with the directory's files unchanged."""

import contextlib
import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _args(d: Path, *extra: str):
    return ["fit", "-c", SMOKE, "--trainer.max_epochs=1", "--campaign.rounds=1", f"--campaign.campaign_dir={d}", *extra]


def _snapshot(d: Path):
    """Every state file's bytes (not ``.lock``, where each run records its pid); a plain file: its bytes."""
    if d.is_file():
        return d.read_bytes()
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-round smoke campaign (round 0 bought 8 labels), made once for every case."""
    d = tmp_path_factory.mktemp("corrupt") / "c"
    with contextlib.chdir(d.parent):
        assert main(_args(d)) == 0
    return d


def _truncate(d: Path, rel, keep: float = 0.5):
    path = d / rel
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return rel


def _put(d: Path, rel, text: str):
    (d / rel).write_text(text)
    return rel


def _edit_state(d: Path, edit):
    state = json.loads((d / "campaign.json").read_text())
    (d / "campaign.json").write_text(json.dumps(edit(state)))
    return "campaign.json"


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def _unfinished(d: Path) -> Path:
    """As after a crash in round 0's labeling: no campaign.json, so round 0 resumes from labels.db."""
    (d / "campaign.json").unlink()
    return Path(DB)


def _row_without_status(d: Path):
    """A row of labels.db that is not an outcome (its status key removed)."""
    db = sqlite3.connect(d / _unfinished(d))
    db.execute("DELETE FROM text_key_values WHERE key = 'status' AND id = 1")
    db.execute("UPDATE systems SET key_value_pairs = json_remove(key_value_pairs, '$.status') WHERE id = 1")
    db.commit()
    db.close()
    return DB


def _file_for_folder(d: Path, rel):
    shutil.rmtree(d / rel)
    return _put(d, rel, "x\n")


def _deny(err: int):
    def atomic_write(path, *args, **kwargs):
        raise OSError(err, os.strerror(err), str(path))

    return atomic_write


CKPT = "round_001/checkpoint.pt"
SEL = "labels/round_000/selected.json"
DB = "labels.db"
REDO_CKPT = "delete round_001/ to redo that round"
REDO_ALL = "delete it to redo every round from the stored selections and labels"
# name: (damage(dir) -> the file the message must name (relative), fragments of the message[, errno of every write])
CASES = {
    "checkpoint truncated": (lambda d: _truncate(d, CKPT), ["truncated or not a torch checkpoint", REDO_CKPT]),
    "checkpoint empty": (lambda d: _put(d, CKPT, ""), ["empty file", REDO_CKPT]),
    "checkpoint missing": (lambda d: (d / CKPT).unlink() or CKPT, ["missing", REDO_CKPT]),
    "campaign.json not JSON": (lambda d: _truncate(d, "campaign.json"), ["unreadable (not JSON", REDO_ALL]),
    "campaign.json empty": (lambda d: _put(d, "campaign.json", ""), ["unreadable (empty file)", REDO_ALL]),
    "campaign.json a list": (lambda d: _put(d, "campaign.json", "[]"), ["a JSON list, not an object", REDO_ALL]),
    "campaign.json without rounds": (lambda d: _edit_state(d, lambda s: _without(s, "rounds")),
                                     ["no 'rounds' list", REDO_ALL]),
    "round without selected_ids": (lambda d: _edit_state(d, lambda s: {**s, "rounds": [_without(s["rounds"][0],
                                   "selected_ids"), *s["rounds"][1:]]}), ["rounds[0] has no 'selected_ids'", REDO_ALL]),
    "failures of the wrong shape": (lambda d: _edit_state(d, lambda s: {**s, "failed": {"3": "x"}}),
                                    ["'failed' is not a list", REDO_ALL]),
    "fingerprint.json not JSON": (lambda d: _truncate(d, "fingerprint.json"),
                                  ["unreadable campaign state (JSONDecodeError", "restore it from a backup"]),
    "selected.json corrupt": (lambda d: _truncate(d, SEL, 0.6), ["unreadable (not JSON", "selection again"]),
    "selected.json not ids": (lambda d: _put(d, SEL, '{"ids": [1]}'), ["not a list of pool ids", "selection again"]),
    "labels.db truncated": (lambda d: _truncate(d, _unfinished(d), 0.3),
                            ["unreadable label database (", "restore it from a backup, or move it away"]),
    "labels.db not a database": (lambda d: _put(d, _unfinished(d), "x" * 5000),
                                 ["unreadable label database (DatabaseError: file is not a database)"]),
    "labels.db row without status": (_row_without_status, ["row 1 has no integer pool_id and round and a status",
                                                           "ase db", "id=1 --delete --yes"]),
    "round folder is a file": (lambda d: _file_for_folder(d, "round_001"), ["a file where a folder is expected"]),
    "labels folder is a file": (lambda d: _file_for_folder(d, "labels"), ["a file where a folder is expected"]),
    "campaign_dir is a file": (lambda d: _file_for_folder(d, "."), ["campaign_dir is a file, not a folder",
                                                                     "set another campaign.campaign_dir"]),
    "read-only campaign_dir": (lambda d: _unfinished(d) and "fingerprint.json",
                               ["not writable (read-only folder or filesystem)", "rerun the same command"], errno.EACCES),
    "full disk": (lambda d: _unfinished(d) and "fingerprint.json", ["the disk is full", "free some space"],
                  errno.ENOSPC),
}


@pytest.mark.parametrize("name", list(CASES))
def test_corrupt_state_one_line_status_2_nothing_modified(name, finished, tmp_path, monkeypatch, capsys):
    damage, fragments, *write_error = CASES[name]
    d = tmp_path / "c"
    shutil.copytree(finished, d)
    named = d / damage(d)
    before = _snapshot(d)
    monkeypatch.chdir(tmp_path)
    if write_error:
        monkeypatch.setattr("al_lightning.atomic.atomic_write", _deny(write_error[0]))
    assert main(_args(d)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("al-lightning: error: ") and str(named.resolve()) in last, last
    assert all(f in last for f in fragments), last
    assert _snapshot(d) == before


def test_the_recovery_the_message_gives_works(finished, tmp_path, monkeypatch, capsys):
    """'delete round_001/ to redo that round' and 'delete campaign.json to redo every round' both
    resume to the same selections without one more oracle call."""
    d = tmp_path / "c"
    shutil.copytree(finished, d)
    monkeypatch.chdir(tmp_path)
    want = json.loads((d / "campaign.json").read_text())["rounds"]
    calls = (d / "oracle_calls.jsonl").read_text()
    _truncate(d, CKPT)
    assert main(_args(d)) == 2
    shutil.rmtree(d / "round_001")
    assert main(_args(d)) == 0
    (d / "campaign.json").unlink()
    assert main(_args(d)) == 0
    got = json.loads((d / "campaign.json").read_text())["rounds"]
    assert [r["selected_ids"] for r in got] == [r["selected_ids"] for r in want]
    assert [r["n_labeled"] for r in got] == [16, 24] and (d / "oracle_calls.jsonl").read_text() == calls
