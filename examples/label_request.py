"""Label a hand-off request file (``campaign.oracle: file``) -- the step your DFT jobs do.

A campaign with the file oracle writes ``<campaign_dir>/handoff/round_NNN.request.extxyz`` and
stops. Compute energies and forces for its structures (same order), write them under
``REF_energy`` / ``REF_forces`` to ``round_NNN.labels.extxyz`` beside it, and rerun the same
``al-lightning fit`` command: the campaign checks the structures match and continues. Here
ASE's EMT stands in for DFT; put your calculator in ``CALCULATOR`` (or run your cluster
workflow and write the file yourself).

    python examples/label_request.py logs/own_handoff/handoff/round_000.request.extxyz
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase.calculators.emt import EMT
from ase.io import read, write

CALCULATOR = EMT  # e.g. functools.partial(ase.calculators.vasp.Vasp, xc="PBE", ...)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request", type=Path, help="a handoff/round_NNN.request.extxyz file")
    args = parser.parse_args()
    if not args.request.name.endswith(".request.extxyz"):
        raise SystemExit(f"{args.request}: expected a *.request.extxyz file written by the campaign")
    out = args.request.with_name(args.request.name.replace(".request.", ".labels."))
    frames = read(args.request, ":", format="extxyz")
    for atoms in frames:
        atoms.calc = CALCULATOR()
        atoms.info["REF_energy"] = float(atoms.get_potential_energy())
        atoms.arrays["REF_forces"] = atoms.get_forces(apply_constraint=False)
        atoms.calc = None
    write(out, frames, format="extxyz")
    print(f"{out}: {len(frames)} structures labeled")


if __name__ == "__main__":
    main()
