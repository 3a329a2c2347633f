"""pv_lcmd's defaults are the row the ablation chose (docs/results/ablation/chosen.json)."""

import json
from pathlib import Path

from al_lightning.acquisition import PVStrategy, build_strategy

ROOT = Path(__file__).resolve().parents[2]


def test_pv_lcmd_defaults_equal_the_ablation_choice():
    chosen = json.loads((ROOT / "docs" / "results" / "ablation" / "chosen.json").read_text())
    expected = repr(vars(build_strategy("pv_lcmd", chosen["init_args"])))
    for strategy in (PVStrategy(), build_strategy("pv_lcmd")):
        assert repr(vars(strategy)) == expected, chosen["arm"]
    assert repr(vars(build_strategy("pv_lcmd", {"shortlist": 0.05}))) != expected  # the comparison can fail


def test_ablation_and_study_seeds_are_disjoint():
    """The ablation's data seed and campaign seeds never appear in the study (both documents say so)."""
    import yaml

    ablation = yaml.safe_load((ROOT / "configs" / "ablation_stage2.yaml").read_text())["study"]
    study = yaml.safe_load((ROOT / "configs" / "study_ntk.yaml").read_text())["study"]
    pilot = yaml.safe_load((ROOT / "configs" / "study_pilot.yaml").read_text())["study"]
    validity = yaml.safe_load((ROOT / "configs" / "study_validity.yaml").read_text())["study"]
    data_seed = [o for o in study["overrides"] if o.startswith("--data.emt.seed=")]
    assert data_seed and data_seed != [o for o in ablation["overrides"] if o.startswith("--data.emt.seed=")]
    assert not set(study["seeds"]) & (set(ablation["seeds"]) | set(pilot["seeds"]) | set(validity["seeds"]))
    assert len(study["seeds"]) >= 10
    for doc in ("results/PROTOCOL.md", "results/ablation/PROTOCOL.md"):
        text = (ROOT / "docs" / doc).read_text()
        assert "1001" in text and "2026" in text
