"""One-off check of issue 25's acceptance: every strategy's demo-size campaign selects the same ids,
bitwise, before and after a refactor, with 1 and with 2 processes (DDP on CPU).

    python benchmarks/same_ids.py run CHECKOUT OUT.json [--epochs 5] [--procs 1 2]
    python benchmarks/same_ids.py compare BEFORE.json AFTER.json

``run`` runs ``al-lightning fit -c configs/demo.yaml`` of CHECKOUT (a git checkout, imported first on
PYTHONPATH) once per strategy name and process count, at most ``--epochs`` epochs per round (the demo's
pool, splits, budget and rounds), and writes {procs: {strategy: [ids per round]}} as each finishes (a
rerun skips finished rows). ``compare`` prints one JSON line per strategy and process count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def names(checkout: Path) -> list:
    code = "from al_lightning.acquisition import strategy_names; print(' '.join(strategy_names()))"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                          text=True, cwd=checkout).stdout.split()


def campaign(checkout: Path, name: str, procs: int, epochs: int) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "al_lightning.cli", "fit", "-c", "configs/demo.yaml",
               f"--campaign.strategy={name}", f"--trainer.max_epochs={epochs}", "--campaign.export_models=false",
               "--trainer.enable_progress_bar=false", f"--campaign.campaign_dir={tmp}/c"]
        if procs > 1:
            cmd += ["--trainer.strategy=ddp", f"--trainer.devices={procs}"]
        env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, env=env, check=True, cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        state = json.loads((Path(tmp) / "c" / "campaign.json").read_text())
    return [r["selected_ids"] for r in state["rounds"] if r["selected_ids"]]


def run(args) -> None:
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {}
    for procs in args.procs:
        for name in names(Path(args.checkout)):
            rows = table.setdefault(str(procs), {})
            if name not in rows:
                rows[name] = campaign(Path(args.checkout), name, procs, args.epochs)
                out.write_text(json.dumps(table, indent=1))
                print(json.dumps({"procs": procs, "strategy": name, "rounds": len(rows[name])}), flush=True)


def compare(args) -> None:
    before, after = json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())
    for procs, rows in sorted(after.items()):
        for name, ids in sorted(rows.items()):
            old = before.get(procs, {}).get(name)
            print(json.dumps({"procs": int(procs), "strategy": name,
                              "same": None if old is None else old == ids,
                              "rounds": len(ids), "labels": sum(len(r) for r in ids)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("checkout")
    r.add_argument("out")
    r.add_argument("--epochs", type=int, default=5)
    r.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    main()
