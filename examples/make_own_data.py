"""Write a small labeled dataset the way a user's own data looks: one extxyz file per split.

Plain ASE, nothing from al_lightning: Pd(111) and Ag(100) slabs (bottom layer fixed) with
H / O / OH / CO adsorbates on random sites, rattled as in a relaxation trajectory, labeled by
ASE's EMT calculator under ``REF_energy`` / ``REF_forces`` (the keys configs/own_data.yaml
reads). The pool is labeled too, so ``campaign.oracle: stored`` can replay its labels; with
``campaign.oracle: ase.calculators.emt.EMT`` the stored labels are ignored and EMT is called
for every selected structure instead (stand-in for your DFT calculator).

    python examples/make_own_data.py my_data            # -> my_data/{train,val,test,pool}.extxyz
    python examples/make_own_data.py my_data --pool 400 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase.build import add_adsorbate, fcc100, fcc111, molecule
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import write

SLABS = {"Pd(111)": lambda: fcc111("Pd", size=(2, 2, 3), vacuum=6.0),
         "Ag(100)": lambda: fcc100("Ag", size=(2, 2, 3), vacuum=6.0)}
MAX_LABELED_FORCE = 10.0  # eV/Å, for train / val / test frames
ADSORBATES = {"H": lambda: molecule("H2")[:1], "O": lambda: molecule("O2")[:1], "OH": lambda: molecule("OH"),
              "CO": lambda: molecule("CO")}


def structure(rng: np.random.Generator):
    """One rattled slab + adsorbate, EMT-labeled (REF_energy, REF_forces), calculator detached."""
    slab = SLABS[rng.choice(sorted(SLABS))]()
    name = str(rng.choice(sorted(ADSORBATES)))
    ads = ADSORBATES[name]()
    if ads.positions[0, 2] > ads.positions[:, 2].min():  # binding atom (C of CO, O of OH) down
        ads.rotate(180, "x")
    cell = slab.cell.array
    offset = rng.uniform(0, 1, 2) @ cell[:2, :2]
    add_adsorbate(slab, ads, height=float(rng.uniform(1.6, 2.4)), position=tuple(offset))
    layers = np.round(slab.positions[:len(slab) - len(ads), 2], 2)
    slab.set_constraint(FixAtoms(indices=[i for i, z in enumerate(layers) if z == layers.min()]))
    slab.rattle(stdev=float(rng.uniform(0.02, 0.08)), seed=int(rng.integers(2**31)))
    slab.calc = EMT()
    slab.info["REF_energy"] = float(slab.get_potential_energy())
    slab.arrays["REF_forces"] = slab.get_forces(apply_constraint=False)
    slab.info["system"] = f"{name}/{slab.get_chemical_formula()}"
    slab.info.pop("adsorbate_info", None)
    slab.calc = None
    return slab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--pool", type=int, default=300, help="pool structures (default 300)")
    parser.add_argument("--train", type=int, default=20, help="initial labeled structures (default 20)")
    parser.add_argument("--val", type=int, default=20, help="validation structures (default 20)")
    parser.add_argument("--test", type=int, default=40, help="test structures (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test", "pool"):
        frames = []
        while len(frames) < getattr(args, split):
            frame = structure(rng)
            # an adsorbate dropped onto a surface atom can feel ~50 eV/Å: keep such outliers out of the
            # labeled and evaluation splits (one of them dominates a validation MAE and early stopping);
            # the pool keeps them, as real pools do (the campaign's sanity filter handles them)
            if split == "pool" or np.linalg.norm(frame.arrays["REF_forces"], axis=1).max() <= MAX_LABELED_FORCE:
                frames.append(frame)
        write(args.out / f"{split}.extxyz", frames, format="extxyz")
        print(f"{args.out / f'{split}.extxyz'}: {len(frames)} structures")


if __name__ == "__main__":
    main()
