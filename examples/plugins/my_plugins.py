"""Your own plug-ins, outside the package, given by import path (put this folder on PYTHONPATH):

* :class:`NPZSource` — a structure source for a NumPy ``.npz`` archive (``data.format`` or a
  file's ``format``: ``my_plugins.NPZSource``), implementing ``StructureSource`` itself;
* :class:`EMTOracle` — an oracle (``campaign.oracle: my_plugins.EMTOracle``) implementing
  ``Oracle`` itself; here ASE's EMT stands in for a call to your own labeling service;
* :class:`CompositionFeatures` — a feature map (``strategy_kwargs: {features: my_plugins.
  CompositionFeatures}``) implementing ``FeatureMap`` itself: element fractions and the model's
  mean force magnitude per structure;
* :class:`ScoreProportional` — a selector (``strategy_kwargs: {selector: my_plugins.ScoreProportional}``)
  implementing ``Selector`` itself: B of the K best-scored candidates, drawn with probability ∝ score.

Convert an extxyz file to the archive format read here:

    python examples/plugins/my_plugins.py my_data/pool.extxyz /tmp/pool.npz
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
from ase import Atoms

import torch

from al_lightning import keys as K
from al_lightning.acquisition import Selector, TopK
from al_lightning.data.io import DataError, normalise
from al_lightning.data.source import StructureSource
from al_lightning.features import FeatureMap, PoolRows, compute_features
from al_lightning.oracle import Oracle


class NPZSource(StructureSource):
    """Structures as flat arrays: ``counts`` (S,), ``numbers`` (N,), ``positions`` (N, 3),
    ``cells`` (S, 3, 3), ``pbc`` (S, 3); labels ``energy`` (S,) and ``forces`` (N, 3) optional."""

    default_energy_key, default_forces_key = "energy", "forces"

    @classmethod
    def detect(cls, path) -> bool:
        return str(path).endswith(".npz")

    def __init__(self, path, energy_key="energy", forces_key="forces", require_labels=True, elements=None):
        self.path, self.energy_key, self.forces_key = Path(path), energy_key, forces_key
        self.require_labels, self.elements = require_labels, elements
        if not self.path.exists():
            raise DataError(f"{self.path}: file not found")
        self._data = dict(np.load(self.path))
        self._starts = np.concatenate([[0], np.cumsum(self._data["counts"])])

    def __len__(self) -> int:
        return len(self._data["counts"])

    def raw(self, i: int) -> Atoms:
        a, b = self._starts[i], self._starts[i + 1]
        atoms = Atoms(numbers=self._data["numbers"][a:b], positions=self._data["positions"][a:b],
                      cell=self._data["cells"][i], pbc=self._data["pbc"][i])
        if self.energy_key in self._data:
            atoms.info[self.energy_key] = float(self._data[self.energy_key][i])
        if self.forces_key in self._data:
            atoms.arrays[self.forces_key] = np.array(self._data[self.forces_key][a:b])
        return atoms

    def __getitem__(self, i: int) -> Atoms:
        return normalise(self.raw(i), f"{self.path}: record {i}", self.energy_key, self.forces_key,
                         self.require_labels, self.require_labels, self.elements)


class EMTOracle(Oracle):
    """Labels one structure per call (raw forces: constraints not applied)."""

    name = "emt-service"

    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        from ase.calculators.emt import EMT

        out = []
        for atoms in structures:
            work = atoms.copy()
            work.calc = EMT()
            energy, forces = work.get_potential_energy(), work.get_forces(apply_constraint=False)
            work.calc = None
            work.info[K.REF_ENERGY], work.arrays[K.REF_FORCES] = float(energy), np.array(forces)
            out.append(work)
        return out


class CompositionFeatures(FeatureMap):
    """One row per structure: its element fractions and ``force_scale`` × the model's mean |F|
    (energies and forces of the same forward come with it, as the contract asks)."""

    def __init__(self, force_scale: float = 1.0) -> None:
        self.force_scale = force_scale

    def rows(self, model, batch, w_energy: float = 1.0, w_forces: float = 1.0) -> PoolRows:
        f = compute_features(model, batch, energy=False)  # no NTK: energies, forces and ids only
        graph, attrs = batch[K.BATCH], batch[K.NODE_ATTRS].to(f.forces.dtype)
        fractions = torch.zeros(len(f.ids), attrs.shape[1], dtype=attrs.dtype, device=attrs.device)
        fractions.index_add_(0, graph, attrs)
        force = torch.zeros(len(f.ids), dtype=attrs.dtype, device=attrs.device).index_add_(0, graph, f.forces.norm(dim=1))
        n = f.n_atoms.to(attrs.dtype)
        vec = torch.cat([fractions / n[:, None], self.force_scale * (force / n)[:, None]], dim=1)
        return PoolRows(f.ids, vec[:, None, :], vec, f.energy, f.forces)


class ScoreProportional(Selector):
    """B of the ``shortlist`` best-scored candidates, drawn without replacement with probability ∝
    score (seeded; uniform when every score is 0)."""

    def __init__(self, shortlist: int = 100, seed: int = 0) -> None:
        self.shortlist, self.seed = shortlist, seed

    def shortlist_size(self, n_candidates: int, budget: int) -> int:
        return min(n_candidates, max(budget, self.shortlist))

    def choose(self, top: TopK, budget: int, centres=None) -> np.ndarray:
        weights = np.maximum(top.scores.double().cpu().numpy(), 0.0)
        weights = weights + 1e-12 * max(weights.max(initial=0.0), 1e-300)  # every candidate can be drawn
        rng = np.random.default_rng(self.seed)
        return rng.choice(top.ids.cpu().numpy(), size=budget, replace=False, p=weights / weights.sum()).astype(np.int64)


def to_npz(source: str, target: str) -> None:
    """Write an ASE-readable file's structures (and REF_energy / REF_forces labels) as an archive."""
    from ase.io import read

    frames = read(source, index=":")
    np.savez(target, counts=np.array([len(a) for a in frames]), numbers=np.concatenate([a.numbers for a in frames]),
             positions=np.concatenate([a.positions for a in frames]), cells=np.array([np.array(a.cell) for a in frames]),
             pbc=np.array([a.pbc for a in frames]), energy=np.array([a.info[K.REF_ENERGY] for a in frames]),
             forces=np.concatenate([a.arrays[K.REF_FORCES] for a in frames]))


if __name__ == "__main__":
    to_npz(sys.argv[1], sys.argv[2])
