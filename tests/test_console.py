"""Console lines: the stalled-round warning fires exactly when a later round kept its first epoch."""

import pytest

from al_lightning.console import round_summary, stalled_round


def _record(round_, epochs, best):
    return {"round": round_, "n_labeled": 50, "epochs": epochs, "best_epoch": best, "fit_seconds": 12.0,
            "metrics": {"test_id/forces_mae": 0.1}, "selected_ids": []}


@pytest.mark.parametrize("round_,epochs,best,fires", [
    (1, 11, 0, True),     # early stopping at patience 10 after a first-epoch best (the v1 study's failure)
    (3, 40, 0, True),     # a full 40-epoch round that never beat its first epoch
    (1, 40, 1, False),    # best at the second epoch: it did learn something after the first
    (0, 40, 0, False),    # round 0 has no new labels
    (2, 2, 0, False),     # too short to tell
    (2, 40, None, False),  # no best-weights record
])
def test_stalled_round_warning(round_, epochs, best, fires):
    msg = stalled_round(_record(round_, epochs, best))
    assert (msg is not None) == fires
    if fires:
        assert f"round {round_}" in msg and f"of {epochs}" in msg and "max_epochs" in msg


def test_stalled_member_fit_is_named():
    record = {**_record(2, 40, 30), "member_fits": [{"name": "m0", "epochs": 40, "best_epoch": 12},
                                                   {"name": "m1", "epochs": 40, "best_epoch": 0}]}
    msg = stalled_round(record)
    assert msg is not None and "member m1 (of 40 epochs)" in msg and "the fit" not in msg and "m0" not in msg


def test_round_summary_shows_best_epoch_one_based():
    assert "11 epochs (best 1)" in round_summary(_record(1, 11, 0))


def test_no_progress_bars_when_the_output_is_a_file(tmp_path):
    """Run as a batch job would (stderr a file, progress bar left at its default): the log holds the
    round lines and no bar of Lightning, the pool pass or labeling (a TTY keeps them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", str(smoke), "--trainer.enable_progress_bar=null",
           "--campaign.strategy=pv_lcmd", f"--campaign.campaign_dir={tmp_path / 'c'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-1500:]
    log = done.stdout + done.stderr
    assert all(f"round {r}:" in log for r in range(3))
    assert "\r" not in log and "pool pass" not in log and "labeling round" not in log and "Epoch" not in log
