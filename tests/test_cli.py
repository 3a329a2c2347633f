"""CLI: dry run, missing data, bad options — each one clear line and exit status 2."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ase.io import write

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _files_config(tmp_path, tiny_paths, drop=None):
    files = {s: str(p) for s, p in tiny_paths.items()}
    if drop:
        files[drop] = str(tmp_path / f"missing_{drop}.extxyz")
    return ["--data.emt", "null", "--data.files", "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"]


def test_dry_run_ok(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "dry run OK" in out and "pool" in out
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing


def test_dry_run_with_files(tmp_path, monkeypatch, capsys, tiny_paths):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE, *_files_config(tmp_path, tiny_paths), "--dry_run"]) == 0
    assert "'pool': 60" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--campaign.rounds=20"], "campaign needs 160 more pool structures (budget 8 x 20 rounds) but the pool has 60 left"),
    (["--campaign.strategy=pv", "--campaign.strategy_kwargs={selector: {class_path: balanced, init_args: {shortlist: 2}}}"],
     "selector balanced: shortlist K=2 is smaller than the budget B=8"),
])
def test_dry_run_checks_the_pool_against_the_strategy_and_the_rounds(tmp_path, monkeypatch, capsys, tiny_paths,
                                                                    extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE, *_files_config(tmp_path, tiny_paths), "--dry_run", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"al-lightning: error: {message}"
    assert not (tmp_path / "logs").exists()


def test_dry_run_names_the_missing_file(tmp_path, monkeypatch, capsys, tiny_paths):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE, *_files_config(tmp_path, tiny_paths, drop="pool"), "--dry_run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"al-lightning: error: data file for split 'pool' not found: {tmp_path / 'missing_pool.extxyz'}"


def test_malformed_data_file_is_one_line(tmp_path, monkeypatch, capsys, tiny_paths):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "val.extxyz"
    bad.write_text("3\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    files = {s: str(p) for s, p in tiny_paths.items()}
    files["val"] = str(bad)
    args = ["--data.emt", "null", "--data.files", "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"]
    assert main(["fit", "-c", SMOKE, *args, "--dry_run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("al-lightning: error: ") and str(bad) in err and "record 0: truncated" in err


@pytest.mark.parametrize("option, message", [
    ("--campaign.budget=0", "campaign.budget must be >= 1"),
    ("--campaign.rounds=-1", "campaign.rounds must be >= 0"),
    ("--model.loss=l1", "model loss must be 'mse' or 'huber'"),
    ("--model.model.hidden_irreps=8x0q", "is not valid e3nn irreps"),
    ("--campaign.strategy=magic", "campaign strategy 'magic' unknown"),
])
def test_bad_values(tmp_path, monkeypatch, capsys, option, message):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "-c", SMOKE, option, "--dry_run"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err[-500:]


def test_unknown_option_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", SMOKE, "--campaign.budgett=3"]) == 2


@pytest.mark.parametrize("config, first_missing", [
    ("oc20_s2ef.yaml", "data/oc20/s2ef_train_200k_pool"),
    ("t1x_reactions.yaml", "data/t1x/transition1x.h5"),
    ("rgd1_energy.yaml", "data/rgd1/RGD1_CHNO.h5"),
])
def test_paper_configs_dry_run_name_missing_data(tmp_path, monkeypatch, capsys, config, first_missing):
    monkeypatch.chdir(tmp_path)
    for strategy in ("pv_lcmd", "committee_f", "random"):
        assert main(["fit", "-c", str(ROOT / "configs" / config), "--dry_run", f"--campaign.strategy={strategy}"]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("al-lightning: error: ") and "data file for split 'pool' not found" in last
        assert first_missing in last
        cfg = yaml.safe_load((ROOT / "configs" / config).read_text())
        n_files = len(cfg["data"]["files"])  # every missing file is named, and a missing foundation too
        foundation = (cfg.get("model") or {}).get("foundation")
        assert f"{n_files + bool(foundation)} problems:" in last
        assert (f"foundation model file not found: {foundation}" in last) == bool(foundation)


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "{fit,study,pretrain}" in out.splitlines()[0]
    for sub in ("fit", "study", "pretrain"):
        assert f"al-lightning {sub}" in out.replace("\n", " ") or f"    {sub} " in out, sub
    assert "Runs the full optimization routine" not in out  # Trainer.fit's line means nothing here


def test_fit_help_describes_every_campaign_option(capsys):
    """Each ``--campaign.<field>`` of CampaignConfig has a description (not only its type)."""
    from dataclasses import fields

    from al_lightning.campaign.config import CampaignConfig

    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("--campaign CONFIG"):]
    blocks = re.split(r"\n  (?=--campaign\.)", section)[1:]
    described = {}
    for block in blocks:
        name = block.split()[0].removeprefix("--campaign.")
        described[name] = re.sub(r"\(type: .*$", "", " ".join(block.split()[1:])).strip()
        described[name] = re.sub(r"^[A-Z_]+ |^\{true,false\} ", "", described[name]).strip()
    assert set(described) == {f.name for f in fields(CampaignConfig)}
    for name, text in described.items():
        assert len(text.split()) >= 4, f"--campaign.{name} has no description: {text!r}"
    for strategy in ("pv_lcmd", "pv_topb", "lcmd", "committee_e", "committee_f", "random"):
        assert strategy in described["strategy"]
    assert "--ckpt_path" not in out and "--weights_only" not in out
    assert "seed_everything" in out and "data.emt.seed" in out  # the seeds explained


def test_dry_run_names_three_problems_at_once(tmp_path, monkeypatch, capsys, tiny_paths):
    """Missing pool, missing foundation and a changed budget against a stored campaign: all named."""
    monkeypatch.chdir(tmp_path)
    stored = ["fit", "-c", SMOKE, *_files_config(tmp_path, tiny_paths), "--campaign.rounds=0",
              "--trainer.max_epochs=1", f"--campaign.campaign_dir={tmp_path / 'c'}", "--campaign.export_models=false"]
    assert main(stored) == 0
    capsys.readouterr()
    changed = ["fit", "-c", SMOKE, *_files_config(tmp_path, tiny_paths, drop="pool"), "--campaign.rounds=0",
               f"--campaign.campaign_dir={tmp_path / 'c'}", "--campaign.budget=5",
               f"--model.foundation={tmp_path / 'nowhere.model'}", "--dry_run"]
    assert main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("al-lightning: error: 3 problems:"), err
    assert f"data file for split 'pool' not found: {tmp_path / 'missing_pool.extxyz'}" in err
    assert f"foundation model file not found: {tmp_path / 'nowhere.model'}" in err
    assert "budget (8 vs 5)" in err and "--campaign.force true" in err
    # the run itself refuses with the same three problems (the same checks), writing nothing new
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert main(changed[:-1]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before


def test_rounds_zero_needs_no_pool(tmp_path, monkeypatch, capsys, tiny_paths):
    """One fit + test evaluation on files without a pool (as benchmarks/backbone_gain.py runs)."""
    monkeypatch.chdir(tmp_path)
    files = {s: str(p) for s, p in tiny_paths.items() if s != "pool"}
    args = ["--data.emt", "null", "--data.files", "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"]
    assert main(["fit", "-c", SMOKE, *args, "--campaign.rounds=0", "--trainer.max_epochs=1",
                 "--campaign.export_models=false"]) == 0
    assert "round 0:" in capsys.readouterr().err


def test_smoke_console_one_line_per_round_no_boilerplate(tmp_path):
    """The console of a real process: a start line, one summary line per round, no GPU/TPU/tip lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", SMOKE, "--trainer.max_epochs=2",
           f"--campaign.campaign_dir={tmp_path / 'c'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert sum("al-lightning: round " in ln for ln in lines) == 3  # rounds 0, 1, 2
    for r in range(3):
        line = next(ln for ln in lines if f"al-lightning: round {r}:" in ln)
        assert "labels" in line and "forces MAE" in line and " id " in line and "energy MAE" in line
    assert any("2 acquisitions, 3 fits" in ln for ln in lines)
    for noise in ("GPU available", "TPU available", "HPU available", "💡", "Tip:", "LitLogger", "| Name"):
        assert not any(noise in ln for ln in lines), noise
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_campaign_start_lines():
    """Fresh start, resume after stored rounds, resume of a round whose selection is stored (a
    crash while labeling, or a file hand-off waiting for labels), and nothing to do."""
    from al_lightning.console import campaign_start

    done = [{"round": 0, "selected_ids": [3, 5]}]
    assert campaign_start("c", "d", 0, 2, []) == "campaign 'c' in d: 2 acquisitions, 3 fits"
    assert "resuming at round 1 of 2 (1 round(s) stored, 2 labels bought)" in campaign_start("c", "d", 1, 2, done)
    line = campaign_start("c", "d", 0, 2, [], selection_stored=True)
    assert "resuming at round 0 of 2 with its selection stored" in line
    assert "nothing to do, all 2 acquisitions are done" in campaign_start("c", "d", 3, 2, done)


@pytest.mark.slow
def test_class_path_config_runs_the_same_campaign_as_short_names(tmp_path, monkeypatch):
    """campaign.strategy / campaign.oracle as class_path + init_args (YAML) ≡ the short-name form."""
    monkeypatch.chdir(tmp_path)
    fast = ["--campaign.rounds=1", "--trainer.max_epochs=1"]
    kw = "{shortlist: 20, batch_size: 16, calibration: false, rel_lambda: 0.01}"
    assert main(["fit", "-c", SMOKE, *fast, "--campaign.name=short", "--campaign.strategy=pv_lcmd",
                 f"--campaign.strategy_kwargs={kw}"]) == 0
    cfg = tmp_path / "class_path.yaml"
    cfg.write_text(yaml.safe_dump({"campaign": {
        "name": "long",
        "strategy": {"class_path": "al_lightning.acquisition.PVStrategy",
                     "init_args": {"mode": "pv_lcmd", "shortlist": 20, "batch_size": 16, "calibration": False,
                                   "rel_lambda": 0.01}},
        "oracle": {"class_path": "ase.calculators.emt.EMT", "init_args": {}}}}))
    assert main(["fit", "-c", SMOKE, "-c", str(cfg), *fast]) == 0
    import json

    short, long_ = (json.loads((tmp_path / "logs" / n / "campaign.json").read_text()) for n in ("short", "long"))
    assert short["rounds"][0]["selected_ids"] == long_["rounds"][0]["selected_ids"]
    assert len(long_["rounds"][0]["selected_ids"]) == 8
    report = (tmp_path / "logs" / "long" / "report.md").read_text()
    assert "strategy `PVStrategy:pv_lcmd`" in report and "oracle `ase.calculators.emt.EMT`" in report


@pytest.mark.parametrize("strategy, message", [
    ("{class_path: al_lightning.acquisition.NoSuchStrategy}", "class_path 'al_lightning.acquisition.NoSuchStrategy': "
                                                             "cannot import"),
    ("{class_path: al_lightning.acquisition.PVStrategy, init_args: {lamda: 1}}", "['lamda'] are not options"),
])
def test_bad_class_path_is_one_line(tmp_path, monkeypatch, capsys, strategy, message):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "-c", SMOKE, f"--campaign.strategy={strategy}", "--dry_run"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert code == 2 and message in err[-1] and err[-1].startswith("al-lightning: error: "), err[-3:]


def _option_helps(text: str) -> dict:
    """{--option: its help text without the (type, default) tail} of an argparse help page."""
    opts, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[\w.]+)", line)
        if m:
            cur = m.group(1)
            opts[cur] = line[len(m.group(0)):]
        elif cur and line.startswith("    "):
            opts[cur] += " " + line.strip()
        else:
            cur = None
    return {k: re.sub(r"\{[^}]*\}|^\s*[A-Z_]+\b", "", re.sub(r"\(type: .*?default: .*?\)", "", v)).strip()
            for k, v in opts.items()}


@pytest.mark.parametrize("sub", ["fit", "pretrain"])
def test_every_option_has_a_description(sub, capsys):
    assert main([sub, "--help"]) == 0
    helps = _option_helps(capsys.readouterr().out)
    assert len(helps) > 50
    bare = sorted(k for k, v in helps.items() if len(v) < 3 or v.lower().strip(". ") == k.rsplit(".", 1)[-1])
    assert not bare, f"options without a description: {bare}"


def test_dispatcher_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = out[out.index("Available subcommands"):]
    assert all(re.search(rf"^\s+{name}\s+\S", listed, flags=re.M) for name in ("fit", "study", "pretrain"))


def test_readme_names_every_strategy():
    from al_lightning.acquisition.config import strategy_names

    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in strategy_names())


def test_demo_dry_run_from_another_folder(tmp_path, monkeypatch, capsys):
    """The shipped configs name the backbone (model.foundation: emt / xtb), not a path relative to
    the working directory: a dry run of them by absolute path works from any folder."""
    monkeypatch.chdir(tmp_path)
    for config in ("demo.yaml", "xtb_demo.yaml"):
        assert main(["fit", "-c", str(ROOT / "configs" / config), "--dry_run"]) == 0, capsys.readouterr().err
    assert "dry run OK" in capsys.readouterr().out
