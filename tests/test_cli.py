"""CLI: dry run, missing data, bad options — each one clear line and exit status 2."""

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
