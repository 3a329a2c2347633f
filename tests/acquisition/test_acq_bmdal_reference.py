"""Our λ and posterior conventions against bmdal_reg (Holzmüller et al., the reference code).

bmdal_reg's ``('train', [σ, None])`` kernel transform rescales the kernel by 1/c, c = mean
training kernel diagonal (``scale_tfm(None)``), then conditions on the training points with
noise σ² (``posterior_tfm(σ)``). Our PV is λ·φᵀ(ΦᵀΦ + λI)⁻¹φ with λ = rel_lambda · c
(docs/design.md §5), so with rel_lambda = σ²: PV = c × bmdal_reg's posterior variance.
Multi-row feature kinds (NTK-EF: an energy row and force rows per structure): every row is a
point of its own on both sides, and a structure's PV is the sum over its rows.
"""

import numpy as np
import pytest
import torch

import bmdal_reg.bmdal.features as bmdal  # a test dependency (make install; --no-deps, see the Makefile)
from bmdal_reg.bmdal.feature_data import TensorFeatureData
from bmdal_reg.bmdal.feature_maps import IdentityFeatureMap

from al_lightning.acquisition import build_precision, gram_partial


def bmdal_posterior_variance(train_rows: torch.Tensor, pool_rows: torch.Tensor, sigma: float):
    """bmdal_reg's ('train', [σ, None]) transform: (mean train diagonal c, pool posterior variances)."""
    fmap = IdentityFeatureMap(n_features=train_rows.shape[1])
    train = bmdal.Features(fmap, TensorFeatureData(train_rows))
    pool = bmdal.Features(fmap, TensorFeatureData(pool_rows))
    scale = train.scale_tfm(factor=None)
    train, pool = scale(train), scale(pool)
    post = train.posterior_tfm(sigma, allow_kernel_space_posterior=False)
    c = float(train_rows.square().sum(1).mean())
    return c, post(pool).get_kernel_matrix_diag()


def features(n: int, p: int, rows: int, seed: int) -> torch.Tensor:
    """(n, rows, p) float64 features with a power-law spectrum (like NTK features)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rows, p, generator=g, dtype=torch.float64) * torch.arange(1, p + 1).rsqrt()


@pytest.mark.parametrize("n_train, p, rows, sigma", [(40, 16, 1, 0.1), (200, 64, 1, 0.03),
                                                     (30, 48, 3, 0.3), (25, 80, 5, 1e-2)])
def test_pv_is_c_times_bmdal_posterior_variance(n_train, p, rows, sigma):
    train, pool = features(n_train, p, rows, 0), features(37, p, rows, 1)
    precision = build_precision(gram_partial(train), rel_lambda=sigma ** 2)
    ours = precision.score(pool)  # (37,), summed over each structure's rows
    c, theirs = bmdal_posterior_variance(train.reshape(-1, p), pool.reshape(-1, p), sigma)
    assert precision.lam == pytest.approx(sigma ** 2 * c, rel=1e-12)
    per_structure = theirs.reshape(37, rows).sum(dim=1)
    np.testing.assert_allclose(ours.numpy(), c * per_structure.numpy(), rtol=1e-6)


def test_on_real_ntk_ef_rows(tiny_spec, tiny_paths):
    """The same identity on NTK-EF rows of a tiny MACE (energy row + 4 probe rows per structure)."""
    from al_lightning.data.batches import fixed_batches
    from al_lightning.data.datamodule import ActiveDataModule
    from al_lightning.features import NTKEnergyForce
    from al_lightning.model.mace import MACEConfig
    from al_lightning.model.module import MACEModule

    torch.manual_seed(0)
    module = MACEModule(model=MACEConfig(hidden_irreps="8x0e+8x1o", mlp_irreps="8x0e", radial_mlp=[16, 16],
                                         max_ell=1, r_max=4.0), dtype="float64")
    dm = ActiveDataModule(emt=tiny_spec, eval_batch_size=8)
    dm.prepare_data()
    dm.setup()
    module.build(dm)
    features = NTKEnergyForce(params="readouts", force_mode="probes", n_probes=4, sketch_dim=None)

    def rows(dataset, n):
        out = [features.rows(module.net, b, 1.0, 10.0).rows.detach()
               for b in dm.batch_loader(dataset, [x.tolist() for x in fixed_batches(np.arange(n), 8)])]
        return torch.cat(out)

    train, pool = rows(dm.labeled_dataset(), len(dm.labeled_dataset())), rows(dm.pool_dataset(), 24)
    sigma = 0.05
    precision = build_precision(gram_partial(train), rel_lambda=sigma ** 2)
    c, theirs = bmdal_posterior_variance(train.reshape(-1, train.shape[-1]), pool.reshape(-1, pool.shape[-1]), sigma)
    np.testing.assert_allclose(precision.score(pool).numpy(), c * theirs.reshape(24, -1).sum(1).numpy(), rtol=1e-6)
