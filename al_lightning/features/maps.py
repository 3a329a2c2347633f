"""Feature maps (docs/design.md §4): what a structure looks like to an acquisition rule.

A :class:`FeatureMap` has one contract, ``rows(model, batch, w_energy, w_forces) -> PoolRows``,
called once per batch from the module's ``predict_step`` (ONE forward per batch):

    PoolRows(ids: LongTensor (G,)          global structure ids, from batch["structure_id"]
                                            (arange(G) when absent),
             rows: Tensor (G, R, p)        feature rows whose Σ_rows φᵀMφ is the PV,
             lcmd: Tensor (G, d)           one vector per structure for LCMD,
             energy: Tensor (G,), forces: Tensor (N, 3)   predictions of the same forward)

Built-in maps (short names for ``features:``), w_E, w_F = the training loss's energy and force
weights, applied the same way on the training and pool sides (docs/design.md §4):

- ``ntk_e`` :class:`NTKEnergy`: rows [√w_E φ_E] (R = 1); lcmd = √w_E φ_E
- ``ntk_f`` :class:`NTKForce`: √w_F · force rows (1 direction, k probes, 3·n_max exact); lcmd = √w_F φ_F
- ``ntk_ef`` :class:`NTKEnergyForce`: [√w_E φ_E ; √w_F force rows]; lcmd = [√w_E φ_E, √w_F φ_F] (2p)
- ``activation`` :class:`ActivationFeatures` / ``descriptor`` :class:`DescriptorFeatures`: the
  baseline vector as one row; lcmd = the same vector

φ_F in the LCMD vector is the force-direction row Jᵀ F̂ (free with ``force_mode="direction"``).
A map may differ on the labeled set (:meth:`FeatureMap.training`: NTK maps use more force probes
there) and may bind itself to a network once per acquisition (:meth:`FeatureMap.prepare`: the
parameter subset and the sketch). Your own map: subclass :class:`FeatureMap`, give it by class_path.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Union

import torch
from torch import Tensor

from al_lightning.features.ntk import FORCE_MODES, compute_features
from al_lightning.features.params import resolve_params
from al_lightning.features.sketch import TensorSketch
from al_lightning.plugins import Component, instantiate


class PoolRows(NamedTuple):
    ids: Tensor
    rows: Tensor
    lcmd: Tensor
    energy: Tensor
    forces: Tensor


class FeatureMap(Component, ABC):
    """Per-structure feature rows of a batch for posterior variance and LCMD (module docstring)."""

    def prepare(self, net: torch.nn.Module) -> "FeatureMap":
        """This map bound to ``net`` for one acquisition (resolved parameters, sketches); default: itself."""
        return self

    def training(self) -> "FeatureMap":
        """The map for the labeled set's rows (PV's training side); default: itself."""
        return self

    @abstractmethod
    def rows(self, model: torch.nn.Module, batch: Any, w_energy: float = 1.0, w_forces: float = 1.0) -> PoolRows:
        """ids, rows (G, R, p), LCMD vectors (G, d), energies and forces of one batch."""


def ef_rows(phi_e: Optional[Tensor], f_rows: Optional[Tensor], w_energy: float = 1.0,
            w_forces: float = 1.0) -> Tensor:
    """Stack [√w_E φ_E (G, p) ; √w_F f_rows (G, R, p)] -> (G, R', p) (either may be None)."""
    parts = []
    if phi_e is not None:
        parts.append(phi_e[:, None, :] * w_energy ** 0.5)
    if f_rows is not None:
        parts.append(f_rows * w_forces ** 0.5)
    if not parts:
        raise ValueError("need energy or force rows")
    return torch.cat(parts, dim=1)


def lcmd_vector(phi_e: Optional[Tensor], phi_f: Optional[Tensor], w_energy: float = 1.0,
                w_forces: float = 1.0) -> Tensor:
    """[√w_E φ_E, √w_F φ_F] (G, 2p) (or the one present) for LCMD."""
    parts = [x * w ** 0.5 for x, w in ((phi_e, w_energy), (phi_f, w_forces)) if x is not None]
    if not parts:
        raise ValueError("need φ_E or φ_F")
    return torch.cat(parts, dim=1)


class NTKFeatureMap(FeatureMap):
    """NTK rows of a parameter subset (``params``: preset, patterns or ``ParamSubset``), sketched to
    ``sketch_dim`` (None: exact). ``force_mode`` / ``n_probes``: force rows of pool structures (cheap:
    ``direction``); ``train_force_mode`` / ``train_probes``: of the labeled set. ``seed`` seeds probes
    and sketch; ``per_atom``: φ_E of E/N. Subclasses choose energy and/or force rows."""

    energy: ClassVar[bool] = True
    forces: ClassVar[bool] = True

    def __init__(self, params: Union[str, List[str]] = "readouts+products", force_mode: str = "direction",
                 n_probes: int = 4, train_force_mode: str = "probes", train_probes: int = 16,
                 sketch_dim: Optional[int] = 1024, seed: int = 0, per_atom: bool = True, eps: float = 1e-8) -> None:
        for name, mode in (("force_mode", force_mode), ("train_force_mode", train_force_mode)):
            if mode not in FORCE_MODES:
                raise ValueError(f"features {name} must be one of {FORCE_MODES}, got {mode!r}")
        if n_probes < 1 or train_probes < 1:
            raise ValueError("features n_probes and train_probes must be >= 1")
        if sketch_dim is not None and sketch_dim < 1:
            raise ValueError(f"features sketch_dim must be >= 1, got {sketch_dim}")
        self.params, self.force_mode, self.n_probes = params, force_mode, n_probes
        self.train_force_mode, self.train_probes = train_force_mode, train_probes
        self.sketch_dim, self.seed, self.per_atom, self.eps = sketch_dim, seed, per_atom, eps
        self._sketch: Optional[TensorSketch] = None

    def prepare(self, net: torch.nn.Module) -> "NTKFeatureMap":
        bound = copy.copy(self)
        bound.params = resolve_params(net, self.params)
        bound._sketch = TensorSketch(self.sketch_dim, seed=self.seed) if self.sketch_dim else None
        return bound

    def training(self) -> "NTKFeatureMap":
        train = copy.copy(self)
        train.force_mode, train.n_probes = self.train_force_mode, self.train_probes
        return train

    def rows(self, model, batch, w_energy: float = 1.0, w_forces: float = 1.0) -> PoolRows:
        if self._sketch is None and self.sketch_dim:  # not prepared: a sketch of the same seed, kept (its cache)
            self._sketch = TensorSketch(self.sketch_dim, seed=self.seed)
        sketch = self._sketch
        f = compute_features(model, batch, self.params, energy=self.energy,
                             force_mode=self.force_mode if self.forces else None, n_probes=self.n_probes,
                             seed=self.seed, per_atom=self.per_atom, direction=self.forces, eps=self.eps, sketch=sketch)
        return PoolRows(f.ids, ef_rows(f.phi_e, f.force_rows, w_energy, w_forces),
                        lcmd_vector(f.phi_e, f.direction, w_energy, w_forces), f.energy, f.forces)


class NTKEnergy(NTKFeatureMap):
    """``ntk_e``: the energy's parameter gradient φ_E = ∂(E/N)/∂θ_S (one backward)."""

    forces = False


class NTKForce(NTKFeatureMap):
    """``ntk_f``: force rows J_gᵀ v (one double backward per row)."""

    energy = False


class NTKEnergyForce(NTKFeatureMap):
    """``ntk_ef`` (the default): energy row and force rows."""


class ActivationFeatures(FeatureMap):
    """``activation``: per-structure ``reduce`` (sum | mean) of last-layer invariant node features
    (``source``: readout_input or node_feats)."""

    def __init__(self, reduce: str = "sum", source: str = "readout_input") -> None:
        if reduce not in ("sum", "mean"):
            raise ValueError(f"features reduce must be 'sum' or 'mean', got {reduce!r}")
        self.reduce, self.source = reduce, source

    def rows(self, model, batch, w_energy: float = 1.0, w_forces: float = 1.0) -> PoolRows:
        f = compute_features(model, batch, energy=False, activation=self.reduce, activation_source=self.source)
        return PoolRows(f.ids, f.activation[:, None, :], f.activation, f.energy, f.forces)


class DescriptorFeatures(FeatureMap):
    """``descriptor``: per-structure mean of MACE's invariant descriptors over all layers."""

    def rows(self, model, batch, w_energy: float = 1.0, w_forces: float = 1.0) -> PoolRows:
        f = compute_features(model, batch, energy=False, descriptor=True)
        return PoolRows(f.ids, f.descriptor[:, None, :], f.descriptor, f.energy, f.forces)


FEATURE_MAPS: Dict[str, str] = {name: f"{__name__}.{cls.__name__}" for name, cls in (
    ("ntk_e", NTKEnergy), ("ntk_f", NTKForce), ("ntk_ef", NTKEnergyForce),
    ("activation", ActivationFeatures), ("descriptor", DescriptorFeatures))}


def build_feature_map(spec: Any) -> FeatureMap:
    """A FeatureMap from a short name (``ntk_ef``, …), an import path, ``{class_path, init_args}`` or an instance."""
    return instantiate(spec, FeatureMap, FEATURE_MAPS, what="features")
