"""A campaign directory is guarded state: one writer (lock), a content fingerprint written first,
label files tied to their pool structures, and checkpoints that cannot run code (issue 14)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from al_lightning.campaign.labeling import LabelStore, StoredLabelMismatch, label_round
from al_lightning.cli import main
from al_lightning.oracle import Oracle

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

GATE_ORACLE = '''
import time
from pathlib import Path

from ase.calculators.emt import EMT


class GateEMT(EMT):
    """EMT that, at its first call, says so and waits until the gate file exists."""

    def __init__(self, gate, **kwargs):
        super().__init__(**kwargs)
        self.gate = Path(gate)

    def calculate(self, *args, **kwargs):
        Path(str(self.gate) + ".waiting").touch()
        t0 = time.time()
        while not self.gate.exists() and time.time() - t0 < 120:
            time.sleep(0.05)
        super().calculate(*args, **kwargs)
'''


def _fit(out: Path, *extra: str):
    return ["fit", "-c", SMOKE, "--trainer.max_epochs=1", f"--campaign.campaign_dir={out}", *extra]


def _subprocess_env(fault=None, path=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AL_FAULT", None)
    if fault:
        env["AL_FAULT"] = fault
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p)
    return env


def _last_error(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"first run ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > seconds:
            raise AssertionError(f"{path} did not appear within {seconds} s")
        time.sleep(0.1)


def test_second_run_on_a_busy_directory_is_refused(tmp_path, monkeypatch, capsys):
    """Two runs on one directory: the second (and its dry run) is refused while the first holds the
    lock; the first completes with exactly one oracle call per selected pool id."""
    (tmp_path / "gate_emt.py").write_text(GATE_ORACLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    out, gate = tmp_path / "c", tmp_path / "gate"
    args = _fit(out, "--campaign.rounds=1", "--campaign.oracle=gate_emt.GateEMT",
                f"--campaign.oracle_kwargs={{gate: {gate}}}")
    first = subprocess.Popen([sys.executable, "-m", "al_lightning.cli", *args], cwd=tmp_path, text=True,
                             env=_subprocess_env(path=tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(Path(f"{gate}.waiting"), first)  # the first run is labeling, lock held
        expected = (f"al-lightning: error: {out} is in use by pid {first.pid} on host {socket.gethostname()} "
                    f"(lock {out / '.lock'}); wait for it to finish or use another campaign_dir")
        assert main(args) == 2
        assert _last_error(capsys) == expected
        assert main([*args, "--dry_run"]) == 2  # reported, not taken
        assert _last_error(capsys) == expected
        gate.touch()
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    state = json.loads((out / "campaign.json").read_text())
    selected = [i for r in state["rounds"] for i in r["selected_ids"]]
    calls = [json.loads(x)["id"] for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    assert len(selected) == 8 and sorted(calls) == sorted(selected)  # one call per id, none by the second run


def test_lock_is_released_by_kill_9(tmp_path):
    """A holder killed with SIGKILL leaves no stale lock (the kernel drops it)."""
    from al_lightning.campaign.lock import CampaignLock, CampaignLocked, busy

    code = "import sys; from al_lightning.campaign.lock import CampaignLock; CampaignLock(sys.argv[1]).acquire(); " \
           "print('locked', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_subprocess_env())
    assert holder.stdout.readline().strip() == "locked"
    assert f"in use by pid {holder.pid} " in busy(tmp_path)
    with pytest.raises(CampaignLocked):
        CampaignLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    assert busy(tmp_path) is None
    with CampaignLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_crash_in_round_0_then_changed_options_are_refused(tmp_path, monkeypatch, capsys):
    """fingerprint.json exists before round 0 fits: a rerun after a kill -9 in round 0 with another
    budget (or strategy) is refused, and the stored state is not touched."""
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "al_lightning.cli", *_fit(out)]
    killed = subprocess.run(cmd, cwd=tmp_path, env=_subprocess_env(fault="fit:1"), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "campaign.json").exists()
    before = (out / "fingerprint.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(_fit(out, "--campaign.budget=4")) == 2
    err = _last_error(capsys)
    assert err == (f"al-lightning: error: {out / 'fingerprint.json'}: the stored campaign has a different budget "
                   "(8 vs 4); use another campaign_dir or --campaign.force true")
    assert main(_fit(out, "--campaign.strategy=pv_topb", "--dry_run")) == 2
    assert "different strategy ('random' vs 'pv_topb')" in _last_error(capsys)
    assert main(_fit(out, "--dry_run")) == 0  # the same command would resume
    assert (out / "fingerprint.json").read_bytes() == before and not (out / "campaign.json").exists()


def _files_args(tmp_path, tiny_paths):
    data = tmp_path / "data"
    data.mkdir()
    files = {s: str(shutil.copy(p, data / p.name)) for s, p in tiny_paths.items()}
    return data / Path(tiny_paths["pool"]).name, ["--data.emt", "null", "--data.files",
                                                  "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"]


def _rewrite_frame_in_place(path: Path, frame: int) -> None:
    """Change the first decimal of the first atom's x in ``frame``: same path, inode, size and mtime."""
    st = path.stat()
    lines = path.read_text().splitlines(keepends=True)
    start = 0
    for _ in range(frame):
        start += int(lines[start].split()[0]) + 2
    tokens = lines[start + 2].split(" ")
    k = next(j for j, t in enumerate(tokens) if j > 0 and "." in t)
    d = tokens[k].index(".") + 1  # x moves by 0.1 Å
    tokens[k] = tokens[k][:d] + str((int(tokens[k][d]) + 1) % 10) + tokens[k][d + 1:]
    lines[start + 2] = " ".join(tokens)
    with open(path, "r+") as fh:
        fh.write("".join(lines))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns, new.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_pool_rewritten_in_place_is_refused(tmp_path, monkeypatch, capsys, tiny_paths):
    """A pool rewritten in place (same size and mtime) changes the content fingerprint: refused;
    forced, the stored label of the changed structure is refused naming its file."""
    pool, files = _files_args(tmp_path, tiny_paths)
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "al_lightning.cli", *_fit(out, *files)]
    killed = subprocess.run(cmd, cwd=tmp_path, env=_subprocess_env(fault="label:2"), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = sorted(LabelStore(out).stored(0)[0])
    assert len(stored) == 2
    _rewrite_frame_in_place(pool, stored[0])
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--dry_run"]):
        assert main(_fit(out, *files, *extra)) == 2
        err = _last_error(capsys)
        assert err.startswith(f"al-lightning: error: {out / 'fingerprint.json'}: the stored campaign has a different "
                              "content of data file 'pool' (sha256 ") and err.endswith("--campaign.force true")
    assert main(_fit(out, *files, "--campaign.force=true")) == 2
    row = LabelStore(out).outcomes(0)[stored[0]].where  # "<campaign_dir>/labels.db: row N"
    assert _last_error(capsys).startswith(f"al-lightning: error: {row}: stored for another structure than pool id "
                                          f"{stored[0]}")
    calls = [json.loads(x)["id"] for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    assert sorted(calls) == stored and not (out / "campaign.json").exists()  # refused before any oracle call or fit


def test_data_files_moved_with_the_same_content_resume(tmp_path, monkeypatch, capsys, tiny_paths):
    """Files are identified by their content: the same files reached by other paths resume; a changed
    reader option is refused in one short line naming the file."""
    pool, files = _files_args(tmp_path, tiny_paths)
    out = tmp_path / "c"
    monkeypatch.chdir(tmp_path)
    assert main(_fit(out, *files, "--campaign.rounds=1")) == 0
    moved = tmp_path / "swap"
    shutil.copytree(pool.parent, moved)
    other = [*files[:3], files[3].replace(str(pool.parent), str(tmp_path / "swap" / ".." / "swap"))]
    assert main(_fit(out, *other, "--campaign.rounds=2")) == 0  # resumed and extended, not refused
    assert json.loads((out / "campaign.json").read_text())["status"] == "complete"
    keyed = [*files[:3], files[3].replace(f"pool: {pool}", f"pool: {{path: {pool}, energy_key: E}}")]
    assert main(_fit(out, *keyed, "--campaign.rounds=2", "--dry_run")) == 2
    err = _last_error(capsys)
    assert "different data file 'pool' (" in err and len(err) < 400 and err.endswith("--campaign.force true")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_pickle_payload_is_refused_unexecuted(tmp_path, monkeypatch, capsys):
    out, marker = tmp_path / "c", tmp_path / "payload_ran"
    monkeypatch.chdir(tmp_path)
    assert main(_fit(out, "--campaign.rounds=0")) == 0
    ckpt = out / "round_000" / "checkpoint.pt"
    good = torch.load(ckpt, weights_only=True)
    torch.save({**good, "datamodule": _Payload(marker)}, ckpt)
    assert main(_fit(out, "--campaign.rounds=0")) == 2  # a rerun resumes from round_000/checkpoint.pt
    assert _last_error(capsys) == (
        f"al-lightning: error: {ckpt}: refused: not a tensors-only campaign checkpoint (it references posix.system; "
        "loading it fully could run code); delete round_000/ to redo that round or use a new campaign_dir")
    assert not marker.exists()


def test_old_campaign_with_only_campaign_json_resumes(tmp_path, monkeypatch, capsys):
    """A campaign written before fingerprint.json (its fingerprint in campaign.json, without the
    newer keys) still resumes, gets a fingerprint.json, and a change is still refused."""
    out = tmp_path / "c"
    monkeypatch.chdir(tmp_path)
    assert main(_fit(out, "--campaign.rounds=0")) == 0
    (out / "fingerprint.json").unlink()
    state = json.loads((out / "campaign.json").read_text())
    del state["fingerprint"]["oracle_kwargs"]
    (out / "campaign.json").write_text(json.dumps(state))
    assert main(_fit(out, "--campaign.budget=4", "--dry_run")) == 2
    assert _last_error(capsys).startswith(f"al-lightning: error: {out / 'campaign.json'}: the stored campaign has a "
                                          "different budget (8 vs 4)")
    assert main(_fit(out, "--campaign.rounds=0")) == 0  # resumed: nothing left to run
    assert json.loads((out / "fingerprint.json").read_text())["budget"] == 8


class _CopyOracle(Oracle):
    def __init__(self):
        self.calls = []

    def label(self, ids, structures):
        self.calls += list(ids)
        out = [a.copy() for a in structures]
        for a in out:
            a.info["REF_energy"] = 0.0
            a.arrays["REF_forces"] = np.zeros((len(a), 3))
        return out


def test_label_file_carries_pool_id_and_structure_hash(tmp_path):
    store, oracle = LabelStore(tmp_path), _CopyOracle()
    structures = [bulk("Cu", cubic=True), bulk("Al", cubic=True)]
    label_round(store, 0, [4, 7], structures, oracle, "copy", lambda i, a: None)
    label_round(store, 0, [4, 7], [a.copy() for a in structures], oracle, "copy", lambda i, a: None)
    assert oracle.calls == [4, 7]  # resumed: nothing labelled twice
    labels, _ = store.stored(0)
    assert labels[7].info["pool_id"] == 7 and labels[7].info["structure_hash"].startswith("sha256:")
    moved = structures[1].copy()
    moved.positions[0, 0] += 1e-3
    with pytest.raises(StoredLabelMismatch) as info:
        label_round(store, 0, [4, 7], [structures[0], moved], oracle, "copy", lambda i, a: None)
    assert str(info.value).startswith(f"{tmp_path / 'labels.db'}: row 2: stored for another")
    assert f"delete the row (ase db {tmp_path / 'labels.db'} id=2 --delete --yes)" in str(info.value)
    assert oracle.calls == [4, 7]


def test_data_file_hash_is_cached_by_stat(tmp_path, monkeypatch):
    from al_lightning.campaign import fingerprint

    monkeypatch.setenv("AL_LIGHTNING_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "pool.extxyz"
    path.write_bytes(b"0123456789" * 1000)
    hashed = []
    real = fingerprint.stream_sha256
    monkeypatch.setattr(fingerprint, "stream_sha256", lambda p: hashed.append(p) or real(p))
    first = fingerprint.file_sha256(path)
    fingerprint._memo.clear()  # a new process: the on-disk cache answers
    assert fingerprint.file_sha256(path) == first and len(hashed) == 1
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(b"9")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint.file_sha256(path) != first and len(hashed) == 2


def test_bad_pool_records_stop_the_run_up_front_or_are_left_out(tmp_path, monkeypatch, capsys, tiny_paths):
    """NaN positions and a missing force label (stored-label pool) in the pool: refused before any fit
    in one line naming the file and records (status 2); with data.skip_bad_records they are left out,
    loudly, and never selected."""
    from ase.io import read, write

    frames = read(tiny_paths["pool"], index=":")
    frames[3].positions[0, 0] = float("nan")
    del frames[5].arrays["REF_forces"]
    data = tmp_path / "data"
    data.mkdir()
    files = {s: str(shutil.copy(p, data / p.name)) for s, p in tiny_paths.items() if s != "pool"}
    write(data / "pool.extxyz", frames, format="extxyz")
    files["pool"] = str(data / "pool.extxyz")
    args = ["--data.emt", "null", "--data.files", "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}",
            "--campaign.strategy=pv_topb"]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "c"
    assert main(_fit(out, *args)) == 2
    err = _last_error(capsys)
    assert err.startswith(f"al-lightning: error: {data / 'pool.extxyz'}: 2 bad pool record(s): record 3: positions "
                          "contain NaN/inf; record 5: ") and "data.skip_bad_records" in err
    assert not (out / "campaign.json").exists()
    assert main(_fit(out, *args, "--data.skip_bad_records=true")) == 0
    assert "2 bad pool record(s)" in capsys.readouterr().err
    state = json.loads((out / "campaign.json").read_text())
    assert not {3, 5} & {i for r in state["rounds"] for i in r["selected_ids"]}
