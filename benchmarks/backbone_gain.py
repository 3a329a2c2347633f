"""Does the shipped backbone help? Fine-tune vs from scratch vs zero-shot on 100 pool labels.

For each seed, 100 structures are drawn at random from the pool of the config's embedded
dataset (EMT catalysis trajectories or xTB molecules: the campaign setting) and become the
labeled set. Three arms, each run
through the real CLI (``al-lightning fit … --campaign.rounds 0``: one fit + test evaluation,
same Trainer, same epoch budget and early stopping for the two trained arms):

* ``finetune``  — the backbone (``model.foundation``) fine-tuned on the 100 labels;
* ``scratch``   — the backbone's architecture (from its card) trained from scratch on them;
* ``zeroshot``  — the backbone evaluated as it is (no training).

Prints JSON (and writes it with ``--out``): per arm and seed the test errors; per arm the mean
force MAE on test_id and on the mean of the OOD splits (``test_ood_*``); the ratios the acceptance of
issue 10 asks for (fine-tune ≥ 20% lower than scratch; zero-shot ≥ 1.5× fine-tuned).

    OMP_NUM_THREADS=1 python benchmarks/backbone_gain.py --out docs/results/backbone/backbone_gain.json
    OMP_NUM_THREADS=1 python benchmarks/backbone_gain.py --config configs/xtb_demo.yaml \
        --out docs/results/xtb/backbone_gain.json
    # another backbone on the same data (the EMT backbone on xTB labels: E0s from another reference)
    OMP_NUM_THREADS=1 python benchmarks/backbone_gain.py --config configs/xtb_demo.yaml \
        --foundation models/emt_foundation.model --labels 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def draw_labels(pool_file: Path, n: int, seed: int, out: Path) -> Path:
    """``n`` random pool structures (labels included) written to ``out`` (extxyz)."""
    from al_lightning.data.io import read_structures, write_extxyz

    frames = read_structures(pool_file)
    pick = np.random.default_rng([seed, 2024]).choice(len(frames), size=n, replace=False)
    write_extxyz(out, [frames[i] for i in sorted(pick)])
    return out


def run_arm(arm: str, seed: int, files: Dict[str, str], base: List[str], card: dict, work: Path,
            finetune_lr: "float | None" = None, finetune_e0s: "str | None" = None) -> dict:
    """One arm through the real CLI; ``base`` is [config, overrides...] (the backbone among them)."""
    from al_lightning.cli import main

    files_arg = "{" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}"
    args = ["fit", "-c", base[0], *base[1:], "--data.emt=null", "--data.xtb=null", f"--data.files={files_arg}",
            "--campaign.rounds=0",
            f"--campaign.campaign_dir={work / f'{arm}_s{seed}'}", f"--seed_everything={seed}",
            f"--campaign.seed={seed}", "--campaign.export_models=false", "--trainer.enable_progress_bar=false"]
    if arm == "scratch":
        arch = card["architecture"]
        args += ["--model.foundation=null", "--model.e0s=null",
                 *[f"--model.model.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in arch.items()]]
    if arm == "zeroshot":
        args += ["--trainer.max_epochs=0"]
    if arm == "finetune" and finetune_lr is not None:
        args += [f"--model.lr={finetune_lr}"]
    if arm != "scratch" and finetune_e0s is not None:
        args += [f"--model.e0s={finetune_e0s}"]
    t0 = time.perf_counter()
    code = main(args)  # a finished arm's directory: the CLI says "nothing to do" and returns the stored state
    if code != 0:
        raise SystemExit(f"backbone_gain: arm {arm} seed {seed} failed with status {code}")
    state = json.loads((work / f"{arm}_s{seed}" / "campaign.json").read_text())
    metrics = state["rounds"][-1]["metrics"]
    ood = sorted({k.split("/")[0] for k in metrics if k.startswith("test_ood")})
    return {"seconds": round(time.perf_counter() - t0, 1), "metrics": metrics,
            "test_id": metrics["test_id/forces_mae"], "ood_mean": float(np.mean([metrics[f"{s}/forces_mae"] for s in ood]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"),
                        help="campaign config giving the data spec, backbone and trainer (default: the demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--max_epochs", type=int, default=60)
    parser.add_argument("--work", default=str(ROOT / "logs" / "backbone_gain"))
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--foundation", default=None, help="backbone file (default: the config's model.foundation)")
    parser.add_argument("--finetune_e0s", default=None, choices=["auto", "foundation", "refit"],
                        help="model.e0s of the fine-tune and zero-shot arms (default: the module's, auto)")
    parser.add_argument("--finetune_lr", type=float, default=None,
                        help="learning rate of the fine-tune arm (default: the module's, 1e-3 with a foundation)")
    ns = parser.parse_args()

    import yaml

    import al_lightning  # noqa: F401
    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.data.synthetic import EMTCatalysisSpec
    from al_lightning.data.xtb import XTBMoleculesSpec

    config = yaml.safe_load(Path(ns.config).read_text())
    data = config["data"]
    dm = (ActiveDataModule(xtb=XTBMoleculesSpec(**data["xtb"])) if data.get("xtb")
          else ActiveDataModule(emt=EMTCatalysisSpec(**data["emt"])))
    foundation = ns.foundation or (config.get("model") or {}).get("foundation")
    if not foundation:
        raise SystemExit(f"{ns.config}: model.foundation is not set; this benchmark needs a backbone")
    from al_lightning.model.mace import foundation_path

    card = json.loads(foundation_path(foundation).with_suffix(".json").read_text())
    dm.prepare_data()
    paths = {s: str(p) for s, p in dm.split_paths().items() if s != "pool"}
    work = Path(ns.work)
    base = [ns.config, f"--trainer.max_epochs={ns.max_epochs}", f"--model.foundation={foundation}"]
    results: Dict[str, Dict[str, dict]] = {"finetune": {}, "scratch": {}, "zeroshot": {}}
    for seed in ns.seeds:
        labels = draw_labels(dm.split_paths()["pool"], ns.labels, seed, work / f"labels_s{seed}.extxyz")
        files = {**paths, "initial": str(labels)}
        for arm in results:
            results[arm][str(seed)] = run_arm(arm, seed, files, base, card, work, ns.finetune_lr, ns.finetune_e0s)
            print(f"[backbone_gain] {arm} seed {seed}: test_id {results[arm][str(seed)]['test_id']:.4f}, "
                  f"OOD mean {results[arm][str(seed)]['ood_mean']:.4f} eV/Å", file=sys.stderr)
    summary = {arm: {k: float(np.mean([r[k] for r in runs.values()])) for k in ("test_id", "ood_mean")}
               for arm, runs in results.items()}
    ratios = {f"finetune_vs_scratch_{k}": 1 - summary["finetune"][k] / summary["scratch"][k] for k in ("test_id", "ood_mean")}
    ratios.update({f"zeroshot_over_finetune_{k}": summary["zeroshot"][k] / summary["finetune"][k]
                   for k in ("test_id", "ood_mean")})
    per_seed_wins = {k: all(results["finetune"][s][k] < 0.8 * results["scratch"][s][k] for s in results["finetune"])
                     for k in ("test_id", "ood_mean")}
    report = {"config": ns.config, "backbone": foundation, "backbone_sha256": card.get("sha256"),
              "labels": ns.labels, "seeds": ns.seeds, "finetune_lr": ns.finetune_lr, "finetune_e0s": ns.finetune_e0s,
              "max_epochs": ns.max_epochs,
              "force_mae_mean": summary,
              "ratios": ratios, "finetune_20pct_better_every_seed": per_seed_wins, "runs": results,
              "data": config.get("data")}
    text = json.dumps(report, indent=1)
    print(text)
    if ns.out:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
