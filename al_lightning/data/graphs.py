"""ASE ``Atoms`` (labels normalised by :mod:`al_lightning.data.io`) → mace ``AtomicData``.

Conversion happens lazily in DataLoader workers (see :class:`GraphDataset`), never for a
whole pool at once. The dtype is ``torch.get_default_dtype()`` at conversion time (TRAPS:
set it before building data and model).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from mace.data import AtomicData, Configuration
from mace.tools import AtomicNumberTable
from mace.tools.torch_geometric.batch import Batch

from al_lightning import keys as K
from al_lightning.data.io import free_mask


def atoms_to_data(
    atoms: Atoms, z_table: AtomicNumberTable, cutoff: float, structure_id: int = -1,
    heads: Optional[Sequence[str]] = None, head: Optional[str] = None,
) -> AtomicData:
    """One structure → AtomicData with labels (if present), free mask, structure id and head index.

    Labels are read from ``atoms.info[REF_energy]`` / ``atoms.arrays[REF_forces]``; a
    missing label gets weight 0 (the structure still converts, e.g. for the pool), a present one
    weight 1, or ``atoms.info[replay_weight]`` for a foundation-replay frame. ``heads`` (a
    multi-head model's head names) and ``head`` (one of them) set the graph's ``head`` index as mace
    does (``Configuration.head``); None: a single-head model (index 0).
    """
    if heads is not None and head not in heads:  # mace would fall back to the last head silently
        raise ValueError(f"structure {structure_id}: head {head!r} is not one of the model's heads {list(heads)}")
    energy = atoms.info.get(K.REF_ENERGY)
    forces = atoms.arrays.get(K.REF_FORCES)
    weight = float(atoms.info.get(K.REPLAY_WEIGHT, 1.0))  # a replay frame's loss weight (model.replay)
    unknown = sorted(set(atoms.numbers.tolist()) - set(z_table.zs))
    if unknown:
        raise ValueError(f"structure {structure_id}: elements {unknown} not in the model's z table {z_table.zs}")
    config = Configuration(
        atomic_numbers=atoms.numbers.copy(),
        positions=atoms.get_positions(),
        properties={"energy": energy, "forces": forces},
        property_weights={"energy": weight * (energy is not None), "forces": weight * (forces is not None)},
        pbc=tuple(bool(x) for x in atoms.pbc),
        cell=np.array(atoms.get_cell()),
        head=head or "Default",
    )
    data = AtomicData.from_config(config, z_table=z_table, cutoff=cutoff, heads=None if heads is None else list(heads))
    if energy is None:
        data.energy = torch.zeros((), dtype=torch.get_default_dtype())
    if forces is None:
        data.forces = torch.zeros(len(atoms), 3, dtype=torch.get_default_dtype())
    data.structure_id = torch.tensor([structure_id], dtype=torch.long)
    data.free_mask = torch.from_numpy(free_mask(atoms))
    data.num_atoms = torch.tensor([len(atoms)], dtype=torch.long)
    return data


def collate(items: Sequence[AtomicData]) -> Batch:
    """List of AtomicData → one mace Batch (disconnected graphs)."""
    return Batch.from_data_list(list(items))


class GraphDataset(torch.utils.data.Dataset):
    """Map-style dataset over a structure source; converts to graphs on access (lazily).

    Args:
        get_atoms: ``i -> (structure_id, Atoms)`` for ``0 <= i < length``.
        length: number of items.
        z_table, cutoff, heads, head: as for :func:`atoms_to_data` (every item gets ``head``).
    """

    def __init__(
        self,
        get_atoms: Callable[[int], tuple[int, Atoms]],
        length: int,
        z_table: AtomicNumberTable,
        cutoff: float,
        dtype: Optional[torch.dtype] = None,
        heads: Optional[Sequence[str]] = None,
        head: Optional[str] = None,
    ) -> None:
        self.get_atoms, self.length = get_atoms, length
        self.z_table, self.cutoff, self.heads, self.head = z_table, cutoff, heads, head
        self.dtype = dtype or torch.get_default_dtype()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> AtomicData:
        sid, atoms = self.get_atoms(i)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)  # workers start with float32
        try:
            return atoms_to_data(atoms, self.z_table, self.cutoff, structure_id=sid, heads=self.heads, head=self.head)
        finally:
            torch.set_default_dtype(previous)
