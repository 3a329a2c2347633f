"""A full disk under TensorBoard's writer thread: one line naming the folder, status 2, and a rerun
on a disk with room completes with the uninterrupted ids and no label bought twice."""

import errno
import json
from pathlib import Path

import pytest

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
ARGS = ["fit", "-c", SMOKE, "--trainer.max_epochs=2", "--campaign.rounds=2"]


def _ids_and_calls(d: Path):
    state = json.loads((d / "campaign.json").read_text())
    calls = [json.loads(x)["id"] for x in (d / "oracle_calls.jsonl").read_text().splitlines()]
    return [i for r in state["rounds"] for i in r["selected_ids"]], calls, state["status"]


@pytest.mark.slow
def test_tensorboard_disk_full_is_one_line_and_a_rerun_completes(tmp_path, monkeypatch, capsys):
    from tensorboard.compat.tensorflow_stub.io import gfile

    monkeypatch.chdir(tmp_path)
    assert main([*ARGS, f"--campaign.campaign_dir={tmp_path / 'ref'}"]) == 0
    reference, _, _ = _ids_and_calls(tmp_path / "ref")
    capsys.readouterr()
    real, writes = gfile.LocalFileSystem._write, []

    def full(self, filename, content, mode):  # the event files' disk fills up after a few records
        if "events.out.tfevents" in str(filename):
            writes.append(filename)
            if len(writes) > 40:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, filename, content, mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "_write", full)
    out = tmp_path / "c"
    assert main([*ARGS, f"--campaign.campaign_dir={out}"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"al-lightning: error: {out / 'tb'}") and "the disk is full; free some space" in last, last
    assert "Traceback" not in err and "Exception in thread" not in err
    monkeypatch.setattr(gfile.LocalFileSystem, "_write", real)
    assert main([*ARGS, f"--campaign.campaign_dir={out}"]) == 0
    ids, calls, status = _ids_and_calls(out)
    assert status == "complete" and ids == reference and sorted(calls) == sorted(ids)


def test_a_full_disk_while_writing_a_round_keeps_its_console_line_and_names_the_file(tmp_path, monkeypatch, capsys):
    import al_lightning.campaign.outputs as outputs

    def full(rounds, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(outputs, "plot_learning_curves", full)
    out = tmp_path / "c"
    assert main([*ARGS, "--campaign.rounds=1", f"--campaign.campaign_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("al-lightning: round 0: 16 labels") for line in err), err[-3:]
    assert err[-1] == (f"al-lightning: error: {out / 'learning_curve.png'}: the disk is full; free some space, "
                       "then rerun the same command (it resumes after the last safe write)")
