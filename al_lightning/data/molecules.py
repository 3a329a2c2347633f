"""Molecules for the embedded xTB datasets: shipped SMILES lists, 3D structures by RDKit,
GFN2-xTB labels by tblite, covalent connectivity and the reactive sites of unimolecular
reaction templates (found on the RDKit graph).

Three disjoint molecule lists (a test checks it): ``ID_MOLECULES`` (the campaign pool and its
in-distribution splits), ``OOD_MOLECULES`` (functional groups the pool never shows: nitriles,
acids, amides, esters, nitro, aromatics, oximes, ureas) and ``FOUNDATION_MOLECULES`` (the
molecular backbone's near-equilibrium pretraining data, as MACE-OFF's SPICE is not the
reactive data it is fine-tuned on). A few ions and a radical carry their charge and spin
multiplicity (from RDKit's formal charges and radical electrons) into ``atoms.info``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Set, Tuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import covalent_radii

from al_lightning import keys as K

ID_MOLECULES = (  # ordered so that the first systems of every split already hold H, C, N and O
    "CCO", "CCN", "C=CCN", "NCCO", "CC=NC", "CC=O", "CNC", "C1CCNC1", "CCCO", "C=CC=O", "CC(C)O", "COC", "C=CC",
    "OCCO", "CCC=O", "C1CC1", "CC(O)CO", "CC(C)=O", "CC=CC", "C1CCC1", "CCC(C)=O", "C=CCO", "C1CCO1", "CCOC",
    "C=CC=C", "C1CCOC1", "OC1CCC1", "C[NH3+]", "CC[O-]", "C[CH2]",
)
OOD_MOLECULES = (
    "CC#N", "CCC#N", "CC(=O)O", "OC=O", "CC(N)=O", "NC=O", "COC(C)=O", "C[N+](=O)[O-]",
    "c1ccccc1", "c1ccncc1", "c1ccoc1", "CC=NO", "NC(N)=O", "O=C1CCCN1",
)
FOUNDATION_MOLECULES = (
    "C", "CC", "CCC", "CCCC", "CC(C)C", "CCCCC", "O", "N", "CO", "CN", "CCCCO", "CC(C)CO", "CC(C)(C)O",
    "CCOCC", "CCCOC", "CCCC=O", "CC(C)C=O", "CCCC(C)=O", "CCNCC", "CCCCN", "CN(C)C", "C=C", "C=CCC",
    "CC(C)=C", "C#C", "C1CCCC1", "C1CCOCC1", "C1CCNCC1", "C1COCCO1", "OCCCO", "NCCN", "CCC(=O)O",
    "CCC(N)=O", "CCOC=O", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "O=C1CCCC1", "C1=CCCC1", "CC(=O)NC",
)
TEMPLATES = ("h_shift", "dissociation", "isomerisation", "ring_opening")
BOND_SCALE = 1.25  # a bond: distance < 1.25 × (sum of covalent radii)


@lru_cache(maxsize=None)
def molecule_graph(smiles: str):
    """RDKit molecule with explicit hydrogens (atom order = the ASE atoms' order)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"molecule list: RDKit cannot parse SMILES {smiles!r}")
    return Chem.AddHs(mol)


def charge_and_multiplicity(smiles: str) -> Tuple[int, int]:
    """(total formal charge, 2S+1 with S from RDKit's radical electrons)."""
    from rdkit import Chem

    mol = molecule_graph(smiles)
    radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    return int(Chem.GetFormalCharge(mol)), int(radicals) + 1


def embed(smiles: str, seed: int) -> Atoms:
    """One 3D conformer by RDKit ETKDG (seeded) and MMFF (UFF where MMFF has no types), as
    ASE atoms without a cell; ``info`` holds ``smiles``, ``charge`` and ``multiplicity``."""
    from rdkit.Chem import AllChem

    mol = molecule_graph(smiles)
    work = type(mol)(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) % (2**31)
    if AllChem.EmbedMolecule(work, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(work, params) != 0:
            raise RuntimeError(f"RDKit could not embed {smiles!r} (seed {seed})")
    if AllChem.MMFFHasAllMoleculeParams(work):
        AllChem.MMFFOptimizeMolecule(work, maxIters=500)
    else:
        AllChem.UFFOptimizeMolecule(work, maxIters=500)
    atoms = Atoms([a.GetSymbol() for a in work.GetAtoms()], positions=work.GetConformer().GetPositions(), pbc=False)
    charge, multiplicity = charge_and_multiplicity(smiles)
    atoms.info.update({"smiles": smiles, K.CHARGE: charge, K.MULTIPLICITY: multiplicity})
    return atoms


def xtb_calculator(atoms: Atoms, accuracy: float = 1.0) -> Calculator:
    """tblite's GFN2-xTB for ``atoms`` with its ``info`` charge and multiplicity (quiet)."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=int(atoms.info.get(K.CHARGE, 0)),
                  multiplicity=int(atoms.info.get(K.MULTIPLICITY, 1)), accuracy=accuracy, verbosity=0)


def bonds(atoms: Atoms) -> Set[Tuple[int, int]]:
    """Covalent bonds (i < j) by distance < BOND_SCALE × (r_cov(i) + r_cov(j))."""
    radii = covalent_radii[atoms.numbers]
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    i, j = np.nonzero(np.triu(d < BOND_SCALE * (radii[:, None] + radii[None]), k=1))
    return set(zip(i.tolist(), j.tolist()))


def bond_change(atoms: Atoms, reference: Set[Tuple[int, int]]) -> int:
    """Bonds broken plus bonds formed against ``reference``."""
    return len(bonds(atoms) ^ reference)


def template_sites(smiles: str, template: str) -> List[Tuple[int, ...]]:
    """Where ``template`` applies on the molecule (atom indices, deterministic order):

    * ``h_shift`` (1,2-H shift): (h, a, b) — H on heavy atom a moves to a's heavy neighbour b;
    * ``dissociation``: (i, j) — a bond outside rings (X–H bonds included);
    * ``isomerisation``: (a, b, c, d) — rotation about the non-ring double bond b=c;
    * ``ring_opening``: (i, j) — a bond of a non-aromatic ring between heavy atoms.
    """
    mol = molecule_graph(smiles)
    heavy = {a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1}
    sites: List[Tuple[int, ...]] = []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if template == "dissociation" and not bond.IsInRing():
            sites.append((i, j))
        elif template == "ring_opening" and bond.IsInRing() and not bond.GetIsAromatic() and {i, j} <= heavy:
            sites.append((i, j))
        elif (template == "isomerisation" and str(bond.GetBondType()) == "DOUBLE" and not bond.IsInRing()
              and {i, j} <= heavy):
            a = [n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetIdx() != j]
            d = [n.GetIdx() for n in mol.GetAtomWithIdx(j).GetNeighbors() if n.GetIdx() != i]
            if a and d:
                sites.append((a[0], i, j, d[0]))
        elif template == "h_shift":
            for h, a, b in ((i, j, None), (j, i, None)):
                if mol.GetAtomWithIdx(h).GetAtomicNum() == 1 and a in heavy:
                    sites += [(h, a, n.GetIdx()) for n in mol.GetAtomWithIdx(a).GetNeighbors() if n.GetIdx() in heavy]
    if template not in TEMPLATES:
        raise ValueError(f"unknown reaction template {template!r}; known: {TEMPLATES}")
    return sorted(set(sites))


def side_of(atoms: Atoms, i: int, j: int) -> np.ndarray:
    """(N,) bool: the atoms on ``j``'s side once bond i–j is cut (the covalent graph)."""
    graph: Dict[int, List[int]] = {k: [] for k in range(len(atoms))}
    for a, b in bonds(atoms):
        if {a, b} != {i, j}:
            graph[a].append(b)
            graph[b].append(a)
    seen, stack = {j}, [j]
    while stack:
        for n in graph[stack.pop()]:
            if n not in seen and n != i:
                seen.add(n)
                stack.append(n)
    mask = np.zeros(len(atoms), dtype=bool)
    mask[list(seen)] = True
    return mask
