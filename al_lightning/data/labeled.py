"""The labeled set's pool side as a small value object with ``state_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence, Set

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from al_lightning import keys as K
from al_lightning.data.io import free_mask


@dataclass
class LabeledSet:
    """Pool ids acquired so far (in order), their labeled structures, and pool ids never to offer
    again (e.g. oracle failures). The ``initial`` records are the datamodule's, not stored here."""

    ids: List[int] = field(default_factory=list)
    structures: List[Atoms] = field(default_factory=list)
    excluded: Set[int] = field(default_factory=set)

    def add(self, ids: Sequence[int], structures: Sequence[Atoms], n_pool: int) -> None:
        """Append labeled pool structures; ValueError (nothing added) for a count mismatch, a duplicate,
        an id outside ``range(n_pool)`` or one already labeled."""
        ids = [int(i) for i in ids]
        if len(ids) != len(structures):
            raise ValueError(f"add: {len(ids)} ids but {len(structures)} structures")
        if len(set(ids)) != len(ids):
            raise ValueError(f"add: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
        known = set(self.ids)
        for i in ids:
            if not 0 <= i < n_pool:
                raise ValueError(f"add: pool id {i} out of range (pool has {n_pool})")
            if i in known:
                raise ValueError(f"add: pool id {i} is already labeled")
        self.ids.extend(ids)
        self.structures.extend(structures)

    def exclude(self, ids: Iterable[int]) -> None:
        self.excluded.update(int(i) for i in ids)

    def candidates(self, n_pool: int) -> np.ndarray:
        """(n,) int64: pool ids neither labeled nor excluded, sorted."""
        taken = set(self.ids) | self.excluded
        return np.array([i for i in range(n_pool) if i not in taken], dtype=np.int64)

    def copy(self) -> "LabeledSet":
        """An independent set (new lists; the labeled structures themselves are shared, never modified)."""
        return LabeledSet(list(self.ids), list(self.structures), set(self.excluded))

    def state_dict(self) -> Dict:
        return {"labeled_ids": list(self.ids), "excluded_ids": sorted(self.excluded),
                "added": [atoms_to_record(a) for a in self.structures]}

    def load_state_dict(self, state: Dict) -> None:
        self.ids = [int(i) for i in state["labeled_ids"]]
        self.excluded = set(int(i) for i in state.get("excluded_ids", []))
        self.structures = [record_to_atoms(r) for r in state["added"]]


def atoms_to_record(atoms: Atoms) -> dict:
    """Plain, exact (numpy) record of a labeled structure, for state_dict."""
    return {"numbers": atoms.numbers.copy(), "positions": atoms.get_positions(), "cell": np.array(atoms.cell),
            "pbc": atoms.pbc.copy(), "tags": atoms.get_tags(), "fixed": np.flatnonzero(~free_mask(atoms)),
            "energy": float(atoms.info[K.REF_ENERGY]), "forces": np.array(atoms.arrays[K.REF_FORCES])}


def record_to_atoms(rec: dict) -> Atoms:
    atoms = Atoms(numbers=rec["numbers"], positions=rec["positions"], cell=rec["cell"], pbc=rec["pbc"],
                  tags=rec["tags"])
    if len(rec["fixed"]):
        atoms.set_constraint(FixAtoms(indices=rec["fixed"]))
    atoms.info[K.REF_ENERGY] = rec["energy"]
    atoms.arrays[K.REF_FORCES] = np.asarray(rec["forces"])
    return atoms
