"""One plot style for campaign and study figures: split order, split legend, readable axes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Sequence

import numpy as np

SPLIT_ORDER = ("val", "test_id", "test_id_frames", "test_ood_ads", "test_ood_cat", "test_ood_both", "test_ood_metal",
               "test_ood_mol", "test_ood_rxn")
SPLIT_LEGEND = {
    "val": "validation split (early stopping, not a test)",
    "test_id": "in distribution: seen catalysts x seen adsorbates, systems never in the pool",
    "test_ood_ads": "unseen adsorbates (NO, CN, H2O, COH) on seen catalysts",
    "test_ood_cat": "unseen catalysts ((110) facets, bimetallic surfaces) with seen adsorbates",
    "test_ood_both": "unseen catalysts and unseen adsorbates",
    "test_ood_metal": "catalysts of metals held out of the pool (the backbone's pretraining had them)",
    "test_id_frames": "in distribution, frame-uniform: whole held-out trajectories (xTB molecules)",
    "test_ood_mol": "unseen molecules: nitriles, acids, amides, esters, aromatics, ... (xTB molecules)",
    "test_ood_rxn": "unseen reaction template: ring opening of pool molecules (xTB molecules)",
}
SPLIT_COLOURS = {"val": "0.55", "test_id": "tab:blue", "test_ood_ads": "tab:orange", "test_ood_cat": "tab:green",
                 "test_ood_both": "tab:red", "test_ood_metal": "tab:olive", "test_id_frames": "tab:cyan", "test_ood_mol": "tab:purple",
                 "test_ood_rxn": "tab:brown"}


def ordered_splits(names: Iterable[str]) -> List[str]:
    """Splits in the fixed logical order (val, id, ads, cat, both), then any others by name."""
    names = set(names)
    return [s for s in SPLIT_ORDER if s in names] + sorted(names - set(SPLIT_ORDER))


def pyplot():
    """matplotlib.pyplot on the Agg backend with the project's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 10, "legend.fontsize": 8,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def scale_axis(ax, values: Sequence[float]) -> None:
    """Log y axis with labelled 1-2-3-5 ticks when the data span more than a decade; else linear
    (a log axis over a narrower range shows one or two labelled ticks)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) == 0 or v.max() / v.min() < 10:
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(NullFormatter())


def save(fig, path: Path, rect=None) -> None:
    """Lay out (``rect``: the part of the figure the axes may fill, room left for a figure legend)
    and write ``fig`` atomically."""
    from al_lightning.atomic import atomic_write

    fig.tight_layout(rect=rect)
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=120, format=Path(path).suffix.lstrip(".") or "png"),
                 binary=True)  # a full disk leaves the old figure, never half a PNG
    import matplotlib.pyplot as plt

    plt.close(fig)
