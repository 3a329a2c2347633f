"""Data card of an embedded xTB dataset: per split frames, systems, atoms per frame, share of
frames held by the top 10 % of systems, force distribution, reactive fraction, templates,
failures and the file's sha256. Prints JSON; with --out writes card.json and README.md there.

    python benchmarks/xtb_data_card.py --out docs/results/xtb                 # the default spec
    python benchmarks/xtb_data_card.py --foundation --out docs/results/xtb    # the backbone's data
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from ase.io import iread

from al_lightning import keys as K
from al_lightning.campaign.fingerprint import file_sha256
from al_lightning.data.xtb import XTBFoundationSpec, XTBMoleculesSpec


def split_card(path: Path) -> dict:
    frames = list(iread(str(path), index=":", format="extxyz"))
    systems = Counter(f.info.get("system_key", f.info.get(K.SYSTEM_ID)) for f in frames)
    sizes = np.sort(np.array(list(systems.values())))[::-1]
    top = max(1, int(round(0.1 * len(sizes))))
    fnorm = np.concatenate([np.linalg.norm(f.arrays[K.REF_FORCES], axis=1) for f in frames])
    atoms = np.array([len(f) for f in frames])
    firsts = [f for f in frames if "scf_failures" in f.info]
    return {
        "frames": len(frames), "systems": len(systems), "molecules": len({f.info.get("smiles") for f in frames}),
        "atoms_per_frame": {"mean": round(float(atoms.mean()), 2), "min": int(atoms.min()), "max": int(atoms.max())},
        "top10pct_systems_frame_share": round(float(sizes[:top].sum() / sizes.sum()), 3),
        "force_norm_eV_per_A": {q: round(float(np.percentile(fnorm, p)), 3)
                                for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "reactive_fraction": round(float(np.mean([bool(f.info.get("reactive", False)) for f in frames])), 3),
        "templates": dict(sorted(Counter(str(f.info.get("template", "-")) for f in frames).items())),
        "charged_or_open_shell_frames": int(sum(f.info.get(K.CHARGE, 0) != 0 or f.info.get(K.MULTIPLICITY, 1) != 1
                                                for f in frames)),
        "scf_failures": int(sum(int(f.info.get("scf_failures", 0)) for f in firsts)),
        "failed_paths": int(sum(bool(f.info.get("path_failed", False)) for f in firsts)),
        "dropped_frames_max_force": int(sum(int(f.info.get("dropped_frames", 0)) for f in firsts)),
        "sha256": file_sha256(path),
    }


def markdown(card: dict) -> str:
    keys = ["frames", "systems", "molecules", "atoms/frame", "top 10 % systems' share", "|F| p50 / p99 / max",
            "reactive", "SCF failures", "failed paths", "sha256 (first 16)"]
    lines = [f"## {card['name']} (spec key {card['key']}, generated in {card['seconds']:.0f} s)", "",
             "| split | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for split, c in card["splits"].items():
        f = c["force_norm_eV_per_A"]
        row = [c["frames"], c["systems"], c["molecules"], c["atoms_per_frame"]["mean"],
               c["top10pct_systems_frame_share"], f"{f['p50']} / {f['p99']} / {f['max']}", c["reactive_fraction"],
               c["scf_failures"], c["failed_paths"], c["sha256"][:16]]
        lines.append(f"| {split} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "Templates (frames): " + "; ".join(f"{s}: {c['templates']}" for s, c in card["splits"].items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--foundation", action="store_true", help="the molecular backbone's data (XTBFoundationSpec)")
    parser.add_argument("--sizes", type=json.loads, default=None, help='JSON split sizes, e.g. \'{"train": 4000}\'')
    parser.add_argument("--out", type=Path, default=None, help="folder for card.json / README.md")
    args = parser.parse_args(argv)
    kind = XTBFoundationSpec if args.foundation else XTBMoleculesSpec
    spec = kind(**({"sizes": args.sizes} if args.sizes else {}))
    paths = spec.ensure()
    meta = json.loads((next(iter(paths.values())).parent / "spec.json").read_text())
    card = {"name": spec.cache_name, "key": spec.key(), "seconds": meta["seconds"], "spec": meta["spec"],
            "splits": {s: split_card(p) for s, p in paths.items() if p.exists()}}
    print(json.dumps(card, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{spec.cache_name}.json").write_text(json.dumps(card, indent=1) + "\n")
        with open(args.out / f"{spec.cache_name}.md", "w") as fh:
            fh.write(markdown(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
