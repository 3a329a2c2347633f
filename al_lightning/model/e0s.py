"""E0s for a new level of theory: a foundation's zero-shot errors on the labeled set and the rule
``model.e0s: auto`` (the default when fine-tuning) that decides whether to keep or refit its E0s.

A foundation's E0s fit only labels on its own energy reference: xTB or DFT total energies on
the EMT backbone gave 29 eV/atom energy and 2.7 eV/Å force MAE after 50 labels with the E0s kept
(docs/results/xtb/). :func:`zero_shot` measures the foundation on the initial labels before the
first fit; :func:`decide_e0s` refits the E0s (mace's ``--E0s estimated``) when the per-atom
energy error with the foundation's E0s is more than ten times both the labels' own per-atom spread
(the error of a composition-only fit) and the error after a least-squares E0 correction: a
different energy reference, not a disagreement to leave to training (the EMT backbone on its
own catalysis labels: 0.041 vs 0.015 and 0.015 eV/atom, kept; on xTB molecules: refit), and flags a *poor prior* when the zero-shot force
error is no better than predicting zero forces (the EMT backbone on its own catalysis data: 0.52).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from al_lightning import keys as K
from al_lightning.model.mace import lstsq_e0s

MISMATCH_FACTOR = 10.0  # refit when the kept-E0 error is this many times the refit error and the spread
POOR_PRIOR_FORCE_RATIO = 1.0  # zero-shot force MAE / mean |F| of the labels above which the prior is poor (no better than F = 0)


def _zero_shot_rows(model: torch.nn.Module, loader) -> Dict[str, np.ndarray]:
    """Per labeled graph of ``loader`` (energy weight > 0): element counts (S, n_elements), energy
    residual E_ref − E_model (S,) and atom count (S,); per labeled force component |F_ref − F_model|
    and |F_ref| (free atoms of graphs with a force weight > 0); E_ref (S,)."""
    rows: Dict[str, list] = {"counts": [], "residuals": [], "energies": [], "atoms": [], "force_err": [],
                             "force_ref": []}
    for batch in loader:
        data = batch.to_dict() if hasattr(batch, "to_dict") else batch
        with torch.enable_grad():
            out = model(data, training=False, compute_force=True)
        n_graphs = data[K.ENERGY].shape[0]
        c = data[K.NODE_ATTRS].new_zeros(n_graphs, data[K.NODE_ATTRS].shape[1])
        c.index_add_(0, data[K.BATCH], data[K.NODE_ATTRS])
        keep = data[K.ENERGY_WEIGHT] > 0
        rows["counts"].append(c[keep].double().cpu().numpy())
        rows["atoms"].append(c[keep].sum(1).double().cpu().numpy())
        rows["residuals"].append((data[K.ENERGY] - out[K.OUT_ENERGY].detach())[keep].double().cpu().numpy())
        rows["energies"].append(data[K.ENERGY][keep].double().cpu().numpy())
        scored = (data[K.FORCES_WEIGHT][data[K.BATCH]] > 0) & data[K.FREE_MASK]
        ref = data[K.FORCES][scored].double()
        rows["force_err"].append((ref - out[K.OUT_FORCES].detach()[scored].double()).abs().reshape(-1).cpu().numpy())
        rows["force_ref"].append(ref.abs().reshape(-1).cpu().numpy())
    if sum(len(r) for r in rows["residuals"]) == 0:
        raise ValueError("E0s: no labeled structures with an energy")
    return {k: np.concatenate(v) for k, v in rows.items()}


def zero_shot(model: torch.nn.Module, loader) -> Dict[str, Any]:
    """The foundation's zero-shot errors on the labeled graphs of ``loader`` and what an E0 refit
    would change: ``delta`` (n_elements,) least-squares δ with Σ_i δ[Z_i] ≈ E_ref − E_model
    (mace's ``--E0s estimated``; elements absent from the labels get 0), per-atom energy MAE with
    the foundation's E0s (``energy_mae``) and after the refit (``energy_mae_refit``, in-sample),
    the spread of the labels' per-atom energies about their own least-squares E0 fit
    (``energy_spread``: the MAE of a composition-only model, in-sample), force MAE
    (``forces_mae``) and the labels' mean |F| component (``forces_spread``: the MAE of predicting 0)."""
    rows = _zero_shot_rows(model, loader)
    zs = [int(z) for z in model.atomic_numbers]
    delta = lstsq_e0s(rows["counts"], rows["residuals"], zs, what="E0 refit on the foundation")
    refit = rows["residuals"] - rows["counts"] @ delta
    with warnings.catch_warnings():  # the same composition matrix: the refit above already warned
        warnings.simplefilter("ignore", UserWarning)
        baseline = rows["energies"] - rows["counts"] @ lstsq_e0s(rows["counts"], rows["energies"], zs)
    return {"delta": delta, "n": int(len(refit)),
            "energy_spread": float(np.mean(np.abs(baseline) / rows["atoms"])),
            "energy_mae": float(np.mean(np.abs(rows["residuals"]) / rows["atoms"])),
            "energy_mae_refit": float(np.mean(np.abs(refit) / rows["atoms"])),
            "forces_mae": float(np.mean(rows["force_err"])) if rows["force_err"].size else float("nan"),
            "forces_spread": float(np.mean(rows["force_ref"])) if rows["force_ref"].size else float("nan")}


def decide_e0s(stats: Dict[str, Any]) -> Tuple[bool, str, Optional[str]]:
    """(refit?, the ``E0s:`` console line, the ``zero-shot … poor prior`` line or None) from
    :func:`zero_shot` statistics of the foundation on the initial labels."""
    kept, refit, spread = stats["energy_mae"], stats["energy_mae_refit"], stats["energy_spread"]
    do_refit = kept > MISMATCH_FACTOR * max(spread, refit)
    why = (f"zero-shot energy MAE {kept:.4g} eV/atom with the foundation's E0s vs {refit:.4g} after a "
           f"least-squares E0 refit and a label spread of {spread:.4g} eV/atom on {stats['n']} initial labels")
    line = (f"E0s: refit ({why}: the labels are on another energy reference)" if do_refit
            else f"E0s: kept the foundation's ({why})")
    ratio = stats["forces_mae"] / stats["forces_spread"] if stats["forces_spread"] > 0 else float("nan")
    poor = None
    if ratio > POOR_PRIOR_FORCE_RATIO:
        poor = (f"zero-shot: the foundation's force MAE on the initial labels is {stats['forces_mae']:.3g} eV/Å against "
                f"a label spread (mean |F|) of {stats['forces_spread']:.3g} eV/Å (ratio {ratio:.2f}), energy MAE "
                f"{kept:.3g} eV/atom against {spread:.3g}: a poor prior for these labels; fine-tuning may do no "
                "better than training from scratch (compare with model.foundation null)")
    return do_refit, line, poor
