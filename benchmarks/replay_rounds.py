"""Per-round table of the replay tuning study (issue 29; docs/results/replay/README.md).

Reads docs/results/replay/campaigns/default/<arm>/seed*.json (what `al-lightning study -c
configs/study_replay.yaml` commits) and prints markdown: per arm and round, the mean over seeds of
the force MAE on test_id, the pooled OOD splits, test_ood_cat and test_foundation, and the fit
seconds per round.

    .venv/bin/python benchmarks/replay_rounds.py [docs/results/replay]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SPLITS = {"test_id": ["test_id"], "OOD pooled": ["test_ood_ads", "test_ood_cat", "test_ood_both"],
          "test_ood_cat": ["test_ood_cat"], "test_foundation": ["test_foundation"]}


def main(folder: str = "docs/results/replay") -> None:
    root = Path(folder) / "campaigns" / "default"
    print("| arm | seeds | round | labels | " + " | ".join(SPLITS) + " | fit s |")
    print("|---|---|---|---|" + "---|" * (len(SPLITS) + 1))
    for arm in sorted(p.name for p in root.iterdir()):
        states = [json.loads(f.read_text()) for f in sorted((root / arm).glob("seed*.json"))]
        n_rounds = min(len(s["rounds"]) for s in states)
        for r in range(n_rounds):
            rows = [s["rounds"][r] for s in states]
            cells = [np.mean([np.mean([row["metrics"][f"{sp}/forces_mae"] for sp in splits]) for row in rows])
                     for splits in SPLITS.values()]
            fit = np.mean([row["fit_seconds"] for row in rows])
            print(f"| {arm} | {len(states)} | {r} | {rows[0]['n_labeled']} | "
                  + " | ".join(f"{c:.4f}" for c in cells) + f" | {fit:.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
