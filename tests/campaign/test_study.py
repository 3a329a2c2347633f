"""Study runner: AUC and paired intervals by hand; a tiny study end to end (resumable)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from al_lightning.campaign.study import StudyConfig, auc, cut_rounds, paired_interval, run_study, summarise

ROOT = Path(__file__).resolve().parents[2]


def test_auc_is_the_trapezoid_mean_over_rounds_1_to_R():
    """The one AUC (analysis.endpoint_auc's definition): round 0, shared by every arm, is left out."""
    from al_lightning.campaign.analysis import endpoint_auc

    state = {"rounds": [{"round": r, "n_labeled": n, "metrics": {"test_id/forces_mae": m}}
                        for r, n, m in ((0, 5, 9.0), (1, 10, 4.0), (2, 20, 2.0), (3, 40, 1.0))]}
    expected = ((4 + 2) / 2 * 10 + (2 + 1) / 2 * 20) / 30
    assert auc(state, "test_id/forces_mae") == pytest.approx(expected)
    assert endpoint_auc(state, ["test_id"], 3) == pytest.approx(expected)
    assert auc({"rounds": state["rounds"][:2]}, "test_id/forces_mae") == 4.0  # one round after 0: its value


def test_paired_interval_by_hand():
    d = np.array([-0.1, -0.2, -0.3])
    mean, hw = paired_interval(d)
    assert mean == pytest.approx(-0.2)
    assert hw == pytest.approx(4.302652729911275 * 0.1 / np.sqrt(3))


def test_tables_compare_arms_at_the_analysis_rounds():
    """A reference run longer (for label savings) is cut to R rounds in the tables: its final is round R."""
    def state(errors):
        return {"rounds": [{"round": i, "n_labeled": 10 * (i + 1), "metrics": {"test_id/forces_mae": e}}
                           for i, e in enumerate(errors)]}

    runs = {"default": {"random": {0: state([4.0, 3.0, 2.0, 1.0]), 1: state([4.0, 3.5, 3.0, 2.0])},
                        "a": {0: state([4.0, 2.5, 2.0]), 1: state([4.0, 3.0, 2.5])}}}
    cfg = StudyConfig(name="x", base_config="b.yaml", seeds=[0, 1], strategies={"random": [], "a": []},
                      analysis={"rounds": 2})
    table = summarise(cfg, cut_rounds(runs, 2))["default"]
    assert table["random"]["metrics"]["test_id/forces_mae/final"]["mean"] == pytest.approx(2.5)
    assert table["a"]["metrics"]["test_id/forces_mae/final"]["diff_to_ref"] == pytest.approx(-0.25)
    assert table["a"]["metrics"]["test_id/forces_mae/auc"]["diff_to_ref"] == pytest.approx(
        np.mean([auc(runs["default"]["a"][s], "test_id/forces_mae") - auc(cut_rounds(runs, 2)["default"]["random"][s],
                                                                          "test_id/forces_mae") for s in (0, 1)]))
    assert len(runs["default"]["random"][0]["rounds"]) == 4  # the stored runs are not changed
    assert cut_rounds(runs, None) is runs


def test_frozen_study_refuses_to_run(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"study": {"name": "x", "base_config": "a.yaml", "seeds": [0], "frozen": True,
                                           "strategies": {"random": []}}}))
    with pytest.raises(ValueError, match="study x is frozen .* only --report-only"):
        run_study(p)
    with pytest.raises(ValueError, match="no campaign summaries"):  # --report-only is allowed (here: nothing to report)
        run_study(p, report_only=True)


def test_tables_refuse_a_campaign_shorter_than_the_analysis():
    state = {"rounds": [{"round": 0, "n_labeled": 10, "metrics": {}}, {"round": 1, "n_labeled": 20, "metrics": {}}]}
    with pytest.raises(ValueError, match="default/a/seed3 stops before round 2"):
        cut_rounds({"default": {"a": {3: state}}}, 2)


def test_study_config_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"study": {"name": "x", "base_config": "a.yaml", "seeds": [0],
                                           "strategies": {"a": []}}}))
    with pytest.raises(ValueError, match="study.reference 'random' is not one of the strategies"):
        StudyConfig.load(p)
    p.write_text("nothing: 1\n")
    with pytest.raises(ValueError, match="top-level 'study:'"):
        StudyConfig.load(p)


def _tiny_study(tmp_path, name):
    study = {"study": {
        "name": "tiny", "base_config": str(ROOT / "configs" / "smoke.yaml"), "seeds": [0, 1],
        "overrides": ["--trainer.max_epochs=1", "--campaign.rounds=2", "--campaign.budget=4",
                      "--campaign.export_models=false"],
        "strategies": {"random": ["--campaign.strategy=random", "--campaign.rounds=3"],  # extended, as in the study
                       "ntk_ef": ["--campaign.strategy=pv_lcmd",
                                  "--campaign.strategy_kwargs={shortlist: 20, calibration: false}"]},
        "analysis": {"rounds": 2, "primary": [["ntk_ef", "random"]]},
        "campaign_root": str(tmp_path / name / "runs"), "output": str(tmp_path / name / "out")}}
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(study))
    return cfg


def _outcome(state):
    """What a campaign decided and measured (no wall times)."""
    return [(r["round"], r["selected_ids"], r["metrics"], r["epochs"]) for r in state["rounds"]]


@pytest.mark.slow
def test_tiny_study_end_to_end_jobs_and_report_only(tmp_path):
    """1 and 2 campaigns at a time give the same campaigns; --report-only rebuilds the tables
    byte for byte from the stored summaries alone; a rerun resumes (runs nothing)."""
    out1 = run_study(_tiny_study(tmp_path, "one"), jobs=1)
    out2 = run_study(_tiny_study(tmp_path, "two"), jobs=2)
    for lab in ("ntk_ef", "random"):
        for s in (0, 1):
            a, b = (json.loads((o / "campaigns" / "default" / lab / f"seed{s}.json").read_text()) for o in (out1, out2))
            assert _outcome(a) == _outcome(b), (lab, s)
    res = json.loads((out1 / "results.json").read_text())["table"]["default"]
    assert set(res) == {"random", "ntk_ef"} and res["ntk_ef"]["seeds"] == [0, 1]
    m = res["ntk_ef"]["metrics"]["test_id/forces_mae/final"]
    runs = [json.loads((out1 / "campaigns" / "default" / lab / f"seed{s}.json").read_text())
            for lab in ("ntk_ef", "random") for s in (0, 1)]
    assert [len(r["rounds"]) for r in runs] == [3, 3, 4, 4]
    finals = [r["rounds"][2]["metrics"]["test_id/forces_mae"] for r in runs]  # the tables cut random at R = 2
    assert m["mean"] == pytest.approx(np.mean(finals[:2]))
    assert m["diff_to_ref"] == pytest.approx(np.mean(np.array(finals[:2]) - np.array(finals[2:])))
    assert all((out1 / n).read_bytes()[:4] == b"\x89PNG" for n in ("curves_default.png", "savings_default.png"))
    assert "| ntk_ef |" in (out1 / "results.md").read_text()
    analysis = json.loads((out1 / "analysis.json").read_text())
    assert set(analysis["primary"]) == {"ntk_ef vs random / test_id", "ntk_ef vs random / ood_pooled"}
    assert "ntk_ef / test_id / atoms" in analysis["savings"]
    tables = {n: (out1 / n).read_bytes() for n in ("results.json", "results.md", "analysis.json", "analysis.md")}
    import shutil

    shutil.rmtree(tmp_path / "one" / "runs")  # a replaced machine: only the committed summaries are left
    for n in tables:
        (out1 / n).unlink()
    run_study(_tiny_study(tmp_path, "one"), report_only=True)
    assert {n: (out1 / n).read_bytes() for n in tables} == tables
    run_study(_tiny_study(tmp_path, "one"), jobs=2)  # resumes from the summaries alone: reruns nothing
    assert not (tmp_path / "one" / "runs" / "tiny" / "default").exists()
    assert {n: (out1 / n).read_bytes() for n in tables} == tables
    changed = yaml.safe_load(_tiny_study(tmp_path, "one").read_text())
    changed["study"]["overrides"][2] = "--campaign.budget=5"  # another configuration under the same name
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match=r"seed0\.json: made by another configuration of this study"):
        run_study(tmp_path / "one.yaml")
    mtime = (tmp_path / "two" / "runs" / "tiny" / "default" / "random" / "seed0" / "campaign.json").stat().st_mtime_ns
    run_study(_tiny_study(tmp_path, "two"), jobs=2)  # resumes: finished campaigns are not rerun
    assert (tmp_path / "two" / "runs" / "tiny" / "default" / "random" / "seed0" / "campaign.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_submitit_executor_runs_the_same_campaign(tmp_path):
    """--executor submitit (its local executor here; SLURM on a cluster) gives the local runner's campaign."""
    study = yaml.safe_load(_tiny_study(tmp_path, "sub").read_text())
    study["study"]["seeds"], study["study"]["strategies"] = [0], {"random": ["--campaign.strategy=random"]}
    for name in ("sub", "loc"):
        study["study"]["campaign_root"], study["study"]["output"] = str(tmp_path / name / "runs"), str(tmp_path / name / "out")
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(study))
    sub = run_study(tmp_path / "sub.yaml", jobs=2, executor="submitit")
    loc = run_study(tmp_path / "loc.yaml")
    a, b = (json.loads((o / "campaigns" / "default" / "random" / "seed0.json").read_text()) for o in (sub, loc))
    assert _outcome(a) == _outcome(b)
    assert list((tmp_path / "sub" / "runs" / "tiny" / "submitit").glob("*_submitted.pkl"))  # it went through submitit
