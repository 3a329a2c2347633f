"""Plug-in points used the way a user would: a source, an oracle, a feature map and a selector of
their own, outside the package (examples/plugins/my_plugins.py), given by import path, run a smoke
campaign."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from al_lightning import keys as K
from al_lightning.cli import main
from al_lightning.data.readers import open_structures

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.fixture()
def my_plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugins"))
    import my_plugins

    return my_plugins


def test_own_source_reads_what_the_ase_reader_reads(tmp_path, tiny_paths, my_plugins):
    npz = tmp_path / "pool.npz"
    my_plugins.to_npz(str(tiny_paths["pool"]), str(npz))
    ours = open_structures(npz, "my_plugins.NPZSource")
    ase = open_structures(tiny_paths["pool"])
    assert len(ours) == len(ase)
    for i in (0, len(ase) - 1):
        np.testing.assert_allclose(ours[i].positions, ase[i].positions)
        assert ours[i].info[K.REF_ENERGY] == pytest.approx(ase[i].info[K.REF_ENERGY])
        np.testing.assert_allclose(ours[i].arrays[K.REF_FORCES], ase[i].arrays[K.REF_FORCES])


OWN_RULE = ("{features: my_plugins.CompositionFeatures, "
            "selector: {class_path: my_plugins.ScoreProportional, init_args: {shortlist: 20}}}")


def test_smoke_campaign_with_own_source_oracle_features_and_selector(tmp_path, tiny_paths, my_plugins, monkeypatch):
    monkeypatch.chdir(tmp_path)
    npz = tmp_path / "pool.npz"
    my_plugins.to_npz(str(tiny_paths["pool"]), str(npz))
    files = {s: str(p) for s, p in tiny_paths.items() if s != "pool"}
    files_arg = "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + f", pool: {{path: {npz}, format: my_plugins.NPZSource}}}}"
    out = tmp_path / "c"
    code = main(["fit", "-c", SMOKE, "--data.emt=null", f"--data.files={files_arg}", "--trainer.max_epochs=1",
                 "--campaign.rounds=1", "--campaign.oracle=my_plugins.EMTOracle", "--campaign.strategy=pv",
                 f"--campaign.strategy_kwargs={OWN_RULE}", f"--campaign.campaign_dir={out}"])
    assert code == 0
    state = json.loads((out / "campaign.json").read_text())
    # the rule that ran is the user's: its own draw out of the user's map's 20 best PV scores
    from al_lightning.acquisition import build_strategy

    strategy = build_strategy("pv", {"features": "my_plugins.CompositionFeatures",
                                     "selector": {"class_path": "my_plugins.ScoreProportional",
                                                  "init_args": {"shortlist": 20}}})
    assert type(strategy.features).__name__ == "CompositionFeatures"
    assert type(strategy.selector).__name__ == "ScoreProportional"
    from ase.io import read

    n_elements = len({z for a in read(tiny_paths["pool"], ":") for z in a.numbers})
    # the PV ran on the user's features: at most one dimension per element fraction plus the force column
    assert 0 < state["rounds"][0]["acquisition"]["pv/effective_dimension"] <= n_elements + 1
    calls = [json.loads(x) for x in (out / "oracle_calls.jsonl").read_text().splitlines()]
    assert sorted(c["id"] for c in calls) == sorted(state["rounds"][0]["selected_ids"]) and len(calls) == 8


def test_unknown_format_class_is_one_line(tmp_path):
    from al_lightning.data.io import DataError

    with pytest.raises(DataError, match="format 'nowhere.Source': cannot import"):
        open_structures(tmp_path / "x.npz", "nowhere.Source")
    with pytest.raises(DataError, match="is not a StructureSource subclass"):
        open_structures(tmp_path / "x.npz", "pathlib.Path")


def _untyped_selector_class():
    from al_lightning.acquisition import Selector, TopB

    class Untyped(Selector):
        def __init__(self, k, **extra):  # no type hints, and **kwargs: jsonargparse cannot build it
            self.k, self.extra = k, extra

        def shortlist_size(self, n_candidates, budget):
            return TopB().shortlist_size(n_candidates, budget)

        def choose(self, top, budget, centres=None):
            return TopB().choose(top, budget)

    class Forgetful(Untyped):
        def __init__(self, k):  # keeps its option under another name: its repr would not key resumable state
            self._k = k

    return Untyped, Forgetful


def test_untyped_plugins_are_built_by_calling_them_and_must_keep_their_options(monkeypatch):
    from al_lightning.acquisition import build_selector

    Untyped, Forgetful = _untyped_selector_class()
    monkeypatch.setattr(sys.modules[__name__], "Untyped", Untyped, raising=False)
    monkeypatch.setattr(sys.modules[__name__], "Forgetful", Forgetful, raising=False)
    built = build_selector({"class_path": f"{__name__}.Untyped", "init_args": {"k": 3, "note": "x"}})
    assert type(built) is Untyped and built.k == 3 and built.extra == {"note": "x"}
    with pytest.raises(ValueError, match=r"does not keep its option\(s\) \['k'\] as attributes") as info:
        build_selector({"class_path": f"{__name__}.Forgetful", "init_args": {"k": 3}})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unexpected keyword argument 'j'"):
        build_selector({"class_path": f"{__name__}.Forgetful", "init_args": {"j": 3}})
