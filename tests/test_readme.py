"""The README's shell blocks, run in order as a new user would paste them (sizes cut down).

Substitutions, so that the whole README runs in about a minute: every campaign config becomes
the tiny ``configs/smoke.yaml`` (demo) or keeps its own data with one round of one epoch;
pretraining uses ``configs/pretrain_smoke.yaml``; ``/tmp/`` is the test's temporary folder;
``.venv/bin/`` is the bin folder of the interpreter running the tests. ``al-lightning``
commands run in-process through :func:`al_lightning.cli.main` (the console script's entry
point), other commands as subprocesses. Every command must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from al_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
MARK = "# README test: skipped"
# blocks / lines this test does not run, each marked in the README (a block: its first line)
SKIPPED_BLOCKS = {
    "tensorboard --logdir": "TensorBoard is a server",
    "make install TORCH_INDEX=": "GPU install / another wheel index",
    "al-lightning study -c configs/study_emt.yaml": "the full study takes hours",
    "--trainer.accelerator gpu": "needs GPUs",
}
SKIPPED_LINES = {"make test": "the test suite itself"}
FAST = ["--trainer.max_epochs", "1", "--campaign.rounds", "1", "--trainer.enable_progress_bar", "false"]


def readme_blocks() -> list:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def make_recipe(target: str) -> list:
    """The commands a Makefile target runs (so ``make demo`` here stays what the Makefile does)."""
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.+\n)+)", text, flags=re.M).group(1)
    lines = [ln.strip().replace("$(VENV)/bin/", ".venv/bin/").replace("$(PY)", ".venv/bin/python")
             for ln in recipe.splitlines()]
    return [shlex.split(ln) for ln in lines if ln]


def adapt(argv: list, tmp: Path) -> list:
    """One README command with the test's sizes (see the module docstring)."""
    argv = [a.replace("/tmp/", f"{tmp}/") for a in argv]
    if argv[0] == ".venv/bin/al-lightning" and argv[1] == "fit":
        argv = [a.replace("configs/demo.yaml", "configs/smoke.yaml") for a in argv]
        return argv + ([] if "--dry_run" in argv or "--print_config" in argv else FAST)
    if argv[0] == ".venv/bin/al-lightning" and argv[1] == "pretrain":
        return [a.replace("pretrain_emt.yaml", "pretrain_smoke.yaml") for a in argv] + ["--trainer.max_epochs", "1"]
    if argv[-2:] == ["examples/make_own_data.py", "my_data"]:
        return argv + ["--pool", "40", "--train", "8", "--val", "8", "--test", "8"]
    return argv


def commands() -> tuple:
    """(commands to run, skipped block first lines, skipped lines) in README order."""
    run, skipped_blocks, skipped_lines = [], [], []
    for block in readme_blocks():
        lines = [ln for ln in block.strip().splitlines() if ln.strip()]
        if lines[0].startswith(MARK):
            skipped_blocks.append("\n".join(lines[1:]))
            continue
        for line in lines:
            argv = shlex.split(line, comments=True)
            if not argv:
                continue
            if " ".join(argv) in SKIPPED_LINES:
                assert "the README test skips this line" in line, f"README line {line!r} is skipped but not marked"
                skipped_lines.append(" ".join(argv))
                continue
            run += make_recipe(argv[1]) if argv[0] == "make" else [argv]
    return run, skipped_blocks, skipped_lines


def test_readme_skips_exactly_the_listed_blocks():
    _, blocks, lines = commands()
    assert sorted(lines) == sorted(SKIPPED_LINES)
    for key in SKIPPED_BLOCKS:
        assert sum(key in b for b in blocks) == 1, f"README: no (or more than one) skipped block with {key!r}"
    assert len(blocks) == len(SKIPPED_BLOCKS), blocks


def test_readme_commands_run_in_order(tmp_path, monkeypatch, capsys):
    for name in ("configs", "models", "examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    bindir = Path(sys.executable).parent
    run, _, _ = commands()
    assert any(a[:2] == [".venv/bin/al-lightning", "fit"] for a in run)
    for argv in run:
        env = dict(a.split("=", 1) for a in argv[:next(i for i, a in enumerate(argv) if "=" not in a)])
        argv = adapt(argv[len(env):], tmp_path)  # the shell features used: leading VAR=value assignments
        redirect = argv[argv.index(">") + 1] if ">" in argv else None  # (PYTHONPATH for your plug-ins) and >
        argv = argv[:argv.index(">")] if redirect else argv
        if "PYTHONPATH" in env:
            monkeypatch.syspath_prepend(str(tmp_path / env["PYTHONPATH"]))
        if argv[0] == ".venv/bin/al-lightning":
            code = main(argv[1:])
            out = capsys.readouterr()
            assert code == 0, f"{shlex.join(argv)} exited {code}: {out.err[-800:]}"
            if redirect:
                Path(redirect).write_text(out.out)
        else:
            exe = str(bindir / argv[0].removeprefix(".venv/bin/")) if argv[0].startswith(".venv/bin/") else argv[0]
            done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=300,
                                  env={**os.environ, **env})
            assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}: {done.stderr[-800:]}"
    # what the steps promise: results where the README says, the hand-off finished
    assert (tmp_path / "logs" / "smoke" / "campaign.json").exists()
    assert (tmp_path / "logs" / "own_handoff" / "handoff" / "round_000.labels.extxyz").exists()
    assert (tmp_path / "my_backbone.model").exists()
    assert "campaign:" in (tmp_path / "demo_full.yaml").read_text()
