"""Per-structure features for acquisition (docs/design.md §4): force-aware NTK (E, F, EF),
activation and descriptor baselines, sketches, Hutch++ — as feature maps.

Public API (stable names; external checks call them):

- ``energy_ntk(model, batch, params="readouts", per_atom=True) -> (G, p)``
- ``force_ntk(model, batch, params="readouts", mode="direction"|"probes"|"exact",
  n_probes=4, seed=0) -> (G, R, p)``
- ``compute_features(model, batch, params, ...) -> Features`` (the one feature pass: with the
  energies and forces of the same forward; every map and the functions above call it)
- feature maps (``rows(model, batch, w_energy, w_forces) -> PoolRows``): :class:`FeatureMap`,
  :class:`NTKEnergy` (``ntk_e``), :class:`NTKForce` (``ntk_f``), :class:`NTKEnergyForce`
  (``ntk_ef``), :class:`ActivationFeatures` (``activation``), :class:`DescriptorFeatures`
  (``descriptor``); :func:`build_feature_map` builds one from a short name or class_path;
- ``resolve_params``, ``ef_rows``, ``lcmd_vector``, ``TensorSketch``, ``GaussianSketch``,
  ``activation_features``, ``descriptor_features``.
"""

import al_lightning  # noqa: F401  (mace before e3nn.o3)
from al_lightning.features.maps import (
    FEATURE_MAPS,
    ActivationFeatures,
    DescriptorFeatures,
    FeatureMap,
    NTKEnergy,
    NTKEnergyForce,
    NTKFeatureMap,
    NTKForce,
    PoolRows,
    ef_rows,
    build_feature_map,
    lcmd_vector,
)
from al_lightning.features.ntk import (
    FORCE_MODES,
    STRUCTURE_ID_KEY,
    Features,
    activation_features,
    compute_features,
    descriptor_features,
    energy_ntk,
    force_ntk,
)
from al_lightning.features.params import PRESETS, ParamSubset, resolve_params
from al_lightning.features.sketch import GaussianSketch, TensorSketch

__all__ = [
    "FEATURE_MAPS", "FORCE_MODES", "PRESETS", "STRUCTURE_ID_KEY", "ActivationFeatures", "DescriptorFeatures",
    "FeatureMap", "Features", "GaussianSketch", "NTKEnergy", "NTKEnergyForce", "NTKFeatureMap", "NTKForce",
    "ParamSubset", "PoolRows", "TensorSketch", "activation_features", "compute_features", "descriptor_features",
    "ef_rows", "energy_ntk", "build_feature_map", "force_ntk", "lcmd_vector", "resolve_params",
]
