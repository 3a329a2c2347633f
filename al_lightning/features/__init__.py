"""Per-structure features for acquisition (docs/design.md §4): force-aware NTK (E, F, EF),
activation and descriptor baselines, sketches, Hutch++, and the pool-pass entry.

Public API (stable names; external checks call them):

- ``energy_ntk(model, batch, params="readouts", per_atom=True) -> (G, p)``
- ``force_ntk(model, batch, params="readouts", mode="direction"|"probes"|"exact",
  n_probes=4, seed=0) -> (G, R, p)``
- ``compute_features(model, batch, params, ...) -> Features`` (companion pass with the
  energies and forces of the same forward)
- ``pool_step(model, batch, spec, w_energy=1.0, w_forces=1.0) -> PoolRows``
- ``resolve_params``, ``ef_rows``, ``lcmd_vector``, ``TensorSketch``, ``GaussianSketch``,
  ``activation_features``, ``descriptor_features``.
"""

import al_lightning  # noqa: F401  (mace before e3nn.o3)
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
from al_lightning.features.pool import FEATURE_KINDS, FeatureSpec, PoolRows, ef_rows, lcmd_vector, pool_step
from al_lightning.features.sketch import GaussianSketch, TensorSketch

__all__ = [
    "FEATURE_KINDS", "FORCE_MODES", "PRESETS", "STRUCTURE_ID_KEY", "FeatureSpec", "Features",
    "GaussianSketch", "ParamSubset", "PoolRows", "TensorSketch", "activation_features",
    "compute_features", "descriptor_features", "ef_rows", "energy_ntk",
    "force_ntk", "lcmd_vector", "pool_step",
    "resolve_params",
]
