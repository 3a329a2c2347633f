"""Same config and seed, same selection — across refactors: every strategy's smoke-size selections
equal the ids recorded before the components redesign (tests/campaign/recorded_ids.json, made
at commit 6d918a5). A change that alters a default may re-record them, saying why in its commit."""

import json
from pathlib import Path

import pytest

from al_lightning.acquisition.config import strategy_names
from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((Path(__file__).parent / "recorded_ids.json").read_text())


def test_every_strategy_is_recorded():
    assert sorted(RECORDED["selected_ids"]) == sorted(strategy_names())


@pytest.mark.parametrize("name", strategy_names())
def test_selections_equal_the_recorded_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / name
    assert main(["fit", "-c", str(ROOT / "configs" / "smoke.yaml"), "--trainer.max_epochs=2", "--campaign.rounds=2",
                 f"--campaign.strategy={name}", "--campaign.export_models=false",
                 f"--campaign.campaign_dir={out}"]) == 0
    state = json.loads((out / "campaign.json").read_text())
    assert [r["selected_ids"] for r in state["rounds"] if r["selected_ids"]] == RECORDED["selected_ids"][name]
