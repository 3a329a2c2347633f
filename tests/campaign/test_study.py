"""Study runner: AUC and paired intervals by hand; a tiny study end to end (resumable)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from al_lightning.campaign.study import StudyConfig, auc, paired_interval, run_study

ROOT = Path(__file__).resolve().parents[2]


def test_auc_is_the_trapezoid_mean():
    state = {"rounds": [{"n_labeled": 10, "metrics": {"m": 4.0}}, {"n_labeled": 20, "metrics": {"m": 2.0}},
                        {"n_labeled": 40, "metrics": {"m": 1.0}}]}
    assert auc(state, "m") == pytest.approx(((4 + 2) / 2 * 10 + (2 + 1) / 2 * 20) / 30)


def test_paired_interval_by_hand():
    d = np.array([-0.1, -0.2, -0.3])
    mean, hw = paired_interval(d)
    assert mean == pytest.approx(-0.2)
    assert hw == pytest.approx(4.302652729911275 * 0.1 / np.sqrt(3))


def test_study_config_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"study": {"name": "x", "base_config": "a.yaml", "seeds": [0],
                                           "strategies": {"a": []}}}))
    with pytest.raises(ValueError, match="study.reference 'random' is not one of the strategies"):
        StudyConfig.load(p)
    p.write_text("nothing: 1\n")
    with pytest.raises(ValueError, match="top-level 'study:'"):
        StudyConfig.load(p)


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    study = {"study": {
        "name": "tiny", "base_config": str(ROOT / "configs" / "smoke.yaml"), "seeds": [0, 1],
        "overrides": ["--trainer.max_epochs=1", "--campaign.rounds=1", "--campaign.budget=4",
                      "--campaign.export_models=false"],
        "strategies": {"random": ["--campaign.strategy=random"],
                       "ntk_ef": ["--campaign.strategy=pv_lcmd",
                                  "--campaign.strategy_kwargs={shortlist: 20, calibration: false}"]},
        "campaign_root": str(tmp_path / "runs"), "output": str(tmp_path / "out")}}
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study))
    out = run_study(cfg)
    res = json.loads((out / "results.json").read_text())["table"]["default"]
    assert set(res) == {"random", "ntk_ef"} and res["ntk_ef"]["seeds"] == [0, 1]
    m = res["ntk_ef"]["metrics"]["test_id/forces_mae/final"]
    runs = [json.loads((tmp_path / "runs" / "tiny" / "default" / lab / f"seed{s}" / "campaign.json").read_text())
            for lab in ("ntk_ef", "random") for s in (0, 1)]
    finals = [r["rounds"][-1]["metrics"]["test_id/forces_mae"] for r in runs]
    assert m["mean"] == pytest.approx(np.mean(finals[:2]))
    assert m["diff_to_ref"] == pytest.approx(np.mean(np.array(finals[:2]) - np.array(finals[2:])))
    assert (out / "curves_default.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ntk_ef |" in (out / "results.md").read_text()
    mtime = (tmp_path / "runs" / "tiny" / "default" / "random" / "seed0" / "campaign.json").stat().st_mtime_ns
    run_study(cfg)  # resumes: finished campaigns are not rerun
    assert (tmp_path / "runs" / "tiny" / "default" / "random" / "seed0" / "campaign.json").stat().st_mtime_ns == mtime
