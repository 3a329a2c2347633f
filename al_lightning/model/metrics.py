"""Per-split error metrics (torchmetrics; keys of docs/design.md §9b).

``<split>/energy_mae``, ``<split>/energy_rmse`` in eV/atom; ``<split>/forces_mae``,
``<split>/forces_rmse`` in eV/Å per force component, on free atoms only. torchmetrics
keeps sums and counts, so distributed results equal single-process ones when no sample is
duplicated (our evaluation samplers never pad).
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from al_lightning import keys as K

METRIC_NAMES = ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse")


def free_atom_mean(per_atom: torch.Tensor, batch) -> torch.Tensor:
    """(G,) mean of a per-atom quantity (N,) over each structure's free atoms (0 where none is free):
    the per-structure force error and force disagreement of the acquisition rules."""
    free = batch[K.FREE_MASK].to(per_atom.dtype)
    n = int(batch[K.NUM_ATOMS].numel())
    total = torch.zeros(n, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, batch[K.BATCH], per_atom * free)
    count = torch.zeros_like(total).index_add_(0, batch[K.BATCH], free)
    return total / count.clamp_min(1)


class SplitMetrics(torch.nn.Module):
    """Energy and force MAE/RMSE for one split."""

    def __init__(self) -> None:
        super().__init__()
        self.energy = MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})
        self.forces = MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})

    def update(self, pred_energy, ref_energy, num_atoms, energy_label, pred_forces, ref_forces, atom_mask) -> None:
        """Energies per atom for graphs with an energy label; force components of masked atoms."""
        e_sel = energy_label > 0
        if e_sel.any():
            n = num_atoms.to(pred_energy.dtype)
            self.energy.update((pred_energy / n)[e_sel].detach(), (ref_energy / n)[e_sel])
        if atom_mask.any():
            self.forces.update(pred_forces[atom_mask].detach().reshape(-1), ref_forces[atom_mask].reshape(-1))

    def compute(self) -> dict:
        """Every rank computes (a collective under DDP); metrics with no data (NaN) are dropped."""
        out = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            for group in ("energy", "forces"):
                for k, v in getattr(self, group).compute().items():
                    if torch.isfinite(v):
                        out[f"{group}_{k}"] = v
        return out

    def reset(self) -> None:
        self.energy.reset()
        self.forces.reset()


def split_metrics(callback_metrics: dict, splits) -> dict:
    """``{"<split>/<metric>": float}`` for the given splits out of a trainer's callback_metrics."""
    wanted = {f"{s}/{m}" for s in splits for m in METRIC_NAMES}
    return {k: float(v) for k, v in callback_metrics.items() if k in wanted}


def evaluate(module, datamodule, **trainer_kwargs) -> dict:
    """Test-split metrics of ``module`` in this process (no padding, no logger)."""
    import lightning.pytorch as pl

    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    kw.update(trainer_kwargs)
    trainer = pl.Trainer(inference_mode=False, use_distributed_sampler=False, **kw)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return split_metrics(trainer.callback_metrics, datamodule.test_splits)
