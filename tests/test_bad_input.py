"""Bad input: each case → one clear line naming the file / record / option, exit status 2,
and the campaign directory byte-identical before and after (run in-process via main)."""

import json
import lzma
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase.io import read, write

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _snapshot(d: Path):
    """Every state file's bytes (not ``.lock``: each run that takes the lock records its pid there)."""
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, tiny_paths):
    """A finished tiny campaign on user files (the directory every case must leave untouched)."""
    d = tmp_path_factory.mktemp("bad")
    files = {s: str(p) for s, p in tiny_paths.items()}
    base = ["fit", "-c", SMOKE, "--data.emt", "null", "--trainer.max_epochs=1", "--campaign.rounds=1",
            "--campaign.budget=4", f"--campaign.campaign_dir={d / 'camp'}", "--campaign.export_models=false"]
    args = base + ["--data.files", json.dumps(files)]
    assert main(args) == 0
    return d, base, files


def _write_bad_files(d: Path, files):
    """Malformed variants of the tiny dataset's files; returns {name: (split, path)}."""
    val = read(files["val"], ":")
    out = {}

    def put(name, split, frames=None, text=None):
        path = d / f"{name}.extxyz"
        if text is not None:
            path.write_text(text)
        else:
            write(path, frames)
        out[name] = (split, path)

    lines = Path(files["val"]).read_text().splitlines()
    put("truncated", "val", text="\n".join(lines[: int(lines[0]) + 2 + int(lines[0]) // 2]) + "\n")
    put("empty", "pool", text="")
    put("badcount", "val", text="x\n" + "\n".join(lines[1:]) + "\n")
    nof = [a.copy() for a in val]
    del nof[2].arrays["REF_forces"]
    put("noforces", "initial", nof)
    noe = [a.copy() for a in val]
    del noe[1].info["REF_energy"]
    put("noenergy", "test_id", noe)
    nan = [a.copy() for a in val]
    nan[3].info["REF_energy"] = float("nan")
    put("nanenergy", "test_id", nan)
    inf = [a.copy() for a in val]
    inf[0].arrays["REF_forces"] = inf[0].arrays["REF_forces"].copy()
    inf[0].arrays["REF_forces"][1, 1] = np.inf
    put("infforces", "val", inf)
    shape = [a.copy() for a in val]
    del shape[0].arrays["REF_forces"]
    shape[0].arrays["REF_forces"] = np.zeros((len(shape[0]), 2))
    put("forceshape", "val", shape)
    nanpos = [a.copy() for a in val]
    nanpos[4].positions[0, 0] = np.nan
    put("nanpos", "test_id", nanpos)
    uranium = [a.copy() for a in val]
    uranium[5].numbers[0] = 92
    put("unknown_element", "test_id", uranium)
    return out


def _cases(d: Path, base, files):
    bad = _write_bad_files(d, files)
    with_files = lambda **over: ["--data.files", json.dumps({**files, **over})]  # noqa: E731
    cases = []
    for name, (split, path) in bad.items():
        expected = {"truncated": "record 1: truncated", "empty": "no structures (empty file)",
                    "badcount": "record 0: expected an atom count", "noforces": "record 2: no forces",
                    "noenergy": "record 1: no energy label", "nanenergy": "record 3: energy 'REF_energy' is nan",
                    "infforces": "record 0: forces 'REF_forces' contain NaN/inf",
                    "forceshape": "record 0: forces 'REF_forces' have shape", "nanpos": "record 4: positions contain NaN",
                    "unknown_element": "record 5: element(s) Z=[92] unknown to the model"}[name]
        extra = ["--model.elements=[H, C, N, O, Al, Cu, Ag, Au, Ni, Pd, Pt]"] if name == "unknown_element" else []
        cases.append((name, with_files(**{split: str(path)}) + extra, [str(path), expected]))
    junk = d / "junk.model"
    junk.write_bytes(b"\x00not a model")
    linear = d / "linear.model"
    torch.save(torch.nn.Linear(2, 2), linear)
    t1x = d / "t1x.h5"
    with h5py.File(t1x, "w") as h:
        h.create_group("train/C2H2/rxn0")
    corrupt_xz = d / "0.extxyz.xz"
    corrupt_xz.write_bytes(b"garbage")
    (d / "0.txt.xz").write_bytes(lzma.compress(b"random1,frame0,0.5\n"))
    (d / "c.yaml").write_text("trainer: [unclosed\n")
    cases += [
        ("missing pool", with_files(pool=str(d / "nope.extxyz")), ["nope.extxyz", "not found"]),
        ("budget 0", with_files() + ["--campaign.budget=0"], ["campaign.budget must be >= 1"]),
        ("rounds -1", with_files() + ["--campaign.rounds=-1"], ["campaign.rounds must be >= 0"]),
        ("budget > pool", with_files() + ["--campaign.budget=500"], ["budget 500 is larger than the pool (60"]),
        ("rounds x budget > pool", with_files() + ["--campaign.rounds=20"], ["campaign needs 76 more pool structures"]),
        ("changed budget", with_files() + ["--campaign.budget=5"], ["different budget (4 vs 5)"]),
        ("K < B", with_files() + ["--campaign.strategy=pv_lcmd", "--campaign.strategy_kwargs={shortlist: 2}"],
         ["shortlist K=2 is smaller than the budget B=4"]),
        ("strategy", with_files() + ["--campaign.strategy=best"], ["campaign strategy 'best' unknown"]),
        ("strategy option", with_files() + ["--campaign.strategy=pv_lcmd", "--campaign.strategy_kwargs={k: 3}"],
         ["['k'] are not options of 'pv_lcmd'"]),
        ("feature kind", with_files() + ["--campaign.strategy=pv_topb", "--campaign.strategy_kwargs={feature_kind: ntk}"],
         ["feature_kind must be one of"]),
        ("oracle import", with_files() + ["--campaign.oracle=ase.calculators.nothing.Calc"], ["cannot import"]),
        ("oracle timeout", with_files() + ["--campaign.oracle_timeout=-3"], ["campaign.oracle_timeout must be > 0"]),
        ("loss", with_files() + ["--model.loss=l1"], ["model loss must be 'mse' or 'huber'"]),
        ("dtype", with_files() + ["--model.dtype=float16"], ["model dtype must be 'float32' or 'float64'"]),
        ("ema", with_files() + ["--model.ema_decay=1.5"], ["model ema_decay must be in (0, 1)"]),
        ("irreps", with_files() + ["--model.model.hidden_irreps=8x0q"], ["is not valid e3nn irreps"]),
        ("r_max", with_files() + ["--model.model.r_max=-1"], ["model r_max must be > 0"]),
        ("trainable", with_files() + ["--model.trainable=[nothing.*]"], ["'nothing.*' matches no parameter"]),
        ("element symbol", with_files() + ["--model.elements=[Cu, Xx]"], ["unknown element symbol 'Xx'"]),
        ("e0s", with_files() + ["--model.e0s={Cu: -1.0}"], ["model e0s missing elements"]),
        ("foundation missing", with_files() + [f"--model.foundation={d / 'none.model'}"], ["none.model", "not found"]),
        ("foundation junk", with_files() + [f"--model.foundation={junk}"], [str(junk), "not loadable"]),
        ("foundation not MACE", with_files() + [f"--model.foundation={linear}"], [str(linear), "not a MACE model"]),
        ("batch size", with_files() + ["--data.batch_size=0"], ["data batch sizes must be >= 1"]),
        ("files entry", ["--data.files", json.dumps({**files, "val": {"split": "x"}})], ["data.files.val needs a 'path'"]),
        ("h5 auto", with_files(test_id=str(t1x)), [str(t1x), "set fmt='t1x'"]),
        ("t1x group", ["--data.files", json.dumps({**files, "test_id": {"path": str(t1x), "format": "t1x",
                                                                         "split": "train"}})], [str(t1x)]),
        ("oc20 corrupt xz", with_files(test_id=str(corrupt_xz)), [str(corrupt_xz)]),
        ("name", with_files() + ["--campaign.name=a/b"], ["campaign.name must be a non-empty folder name"]),
        ("config yaml", with_files() + ["-c", str(d / "c.yaml")], []),
        ("unknown option", with_files() + ["--campaign.budgett=3"], []),
    ]
    return cases


def test_bad_inputs_one_line_status_2_directory_unchanged(campaign, tmp_path, capsys):
    d, base, files = campaign
    camp = d / "camp"
    before = _snapshot(camp)
    cases = _cases(tmp_path, base, files)
    assert len(cases) >= 30
    failures = []
    for name, extra, expected in cases:
        code = main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        if code != 2 or (expected and not last.startswith("al-lightning: error: ")):
            failures.append(f"{name}: exit {code}, last line {last!r}")
            continue
        missing = [e for e in expected if e not in last]
        if missing:
            failures.append(f"{name}: {missing} not in {last!r}")
        if _snapshot(camp) != before:
            failures.append(f"{name}: campaign directory changed")
            before = _snapshot(camp)
    assert not failures, "\n".join(failures)
