"""What a user sees of a campaign: campaign.json, per-round files, plots, report, models.

All writers are atomic (temp file + fsync + rename) and rank-0 only (the caller checks).
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from al_lightning.acquisition.config import strategy_label
from al_lightning.atomic import atomic_write
from al_lightning.plugins import Component
from al_lightning.oracle.factory import oracle_spec
from al_lightning.campaign.plotting import SPLIT_COLOURS, SPLIT_LEGEND, ordered_splits, pyplot, save, scale_axis


def write_json(path: Path, obj) -> None:
    """Atomic JSON write."""
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=1, default=_jsonable))


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return x.tolist()
    if isinstance(x, Component):  # a feature map or selector jsonargparse built from a class_path option
        return x.spec()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def export_model(net: torch.nn.Module, path: Path) -> None:
    """A deployable MACE ``.model`` (a pickled module, as mace's own tools write) on CPU."""
    model = copy.deepcopy(net).cpu().eval()
    atomic_write(path, lambda fh: torch.save(model, fh), binary=True)


def plot_learning_curves(rounds: List[dict], path: Path, title: str = "") -> None:
    """PNG: energy and force MAE vs number of labels, one line per split (validation dashed)."""
    plt = pyplot()
    splits = ordered_splits(k.split("/")[0] for r in rounds for k in r["metrics"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["n_labeled"] for r in rounds]
    for ax, metric, unit in ((axes[0], "energy_mae", "eV/atom"), (axes[1], "forces_mae", "eV/Å")):
        shown = []
        for split in splits:
            y = [r["metrics"].get(f"{split}/{metric}", np.nan) for r in rounds]
            ax.plot(x, y, marker="o", ms=4, label=split, color=SPLIT_COLOURS.get(split),
                    linestyle="--" if split == "val" else "-")
            shown += y
        scale_axis(ax, shown)
        ax.set_xlabel("labeled structures")
        ax.set_ylabel(f"{metric.replace('_', ' ')} ({unit})")
    axes[1].legend()
    if title:
        fig.suptitle(title)
    save(fig, path)


def write_report(state: Dict, path: Path) -> None:
    """Markdown report: settings, split legend, per-round errors per split, wall times, failures."""
    rounds = state["rounds"]
    splits = ordered_splits(k.split("/")[0] for r in rounds for k in r["metrics"])
    cfg = state["config"]
    lines = [f"# Campaign `{state['name']}`", "",
             f"strategy `{strategy_label(cfg['strategy'])}`, budget {cfg['budget']} per round, {cfg['rounds']} acquisitions, "
             f"seed {cfg['seed']}, oracle `{oracle_spec(cfg['oracle'])[0]}`; status: **{state['status']}**", "",
             "![learning curves](learning_curve.png)", "", "Splits (embedded EMT catalysis data; your own "
             "`data.files` splits keep their names):", ""]
    lines += [f"- `{s}`: {SPLIT_LEGEND[s]}" for s in splits if s in SPLIT_LEGEND]
    lines.append("")
    for metric, unit in (("forces_mae", "eV/Å"), ("energy_mae", "eV/atom"), ("forces_rmse", "eV/Å"),
                         ("energy_rmse", "eV/atom")):
        lines += [f"## {metric} ({unit})", "", "| round | labels | " + " | ".join(splits) + " |",
                  "|---|---|" + "---|" * len(splits)]
        for r in rounds:
            vals = " | ".join(f"{r['metrics'][f'{s}/{metric}']:.4f}" if f"{s}/{metric}" in r["metrics"] else "–"
                              for s in splits)
            lines.append(f"| {r['round']} | {r['n_labeled']} | {vals} |")
        lines.append("")
    lines += ["## Wall time per round (s)", "", "| round | labels | fit | acquisition |", "|---|---|---|---|"]
    lines += [f"| {r['round']} | {r['n_labeled']} | {r.get('fit_seconds', float('nan')):.1f} | "
              f"{r.get('acquire_seconds', float('nan')):.1f} |" for r in rounds]
    failed = state.get("failed", [])
    lines += ["", f"Oracle failures: {len(failed)}"]
    lines += [f"- pool id {f['id']} (round {f['round']}): {f['error']}" for f in failed]
    atomic_write(path, lambda fh: fh.write("\n".join(lines) + "\n"))


@contextlib.contextmanager
def named_write_errors(folder: "str | Path"):
    """An OSError without a file name (TensorBoard's writer: a full disk) re-raised naming ``folder``;
    the writer thread's own copy of the error is not printed (the main thread reports it once)."""
    _quiet_writer_threads()
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(folder)) from None


def _quiet_writer_threads() -> None:
    previous = threading.excepthook
    if getattr(previous, "al_lightning", False):
        return

    def hook(args) -> None:  # TensorBoard's _AsyncWriterThread stores the error for the main thread, then re-raises
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.al_lightning = True
    threading.excepthook = hook


class CampaignLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger whose write errors name its folder (:func:`named_write_errors`)."""

    def log_metrics(self, *args, **kwargs) -> None:
        with named_write_errors(self.log_dir):
            super().log_metrics(*args, **kwargs)

    def log_hyperparams(self, *args, **kwargs) -> None:
        with named_write_errors(self.log_dir):
            super().log_hyperparams(*args, **kwargs)

    def save(self) -> None:
        with named_write_errors(self.log_dir):
            super().save()

    def finalize(self, status: str) -> None:
        with named_write_errors(self.log_dir):
            super().finalize(status)


def log_round_metrics(tb_dir: Path, round_: int, n_labeled: int, metrics: Dict[str, float]) -> None:
    """TensorBoard scalars ``round/<split>/<metric>`` (step = round) and ``labels/…`` (step = labels)."""
    from torch.utils.tensorboard import SummaryWriter

    with named_write_errors(tb_dir):
        _add_round_scalars(SummaryWriter(log_dir=str(tb_dir)), round_, n_labeled, metrics)


def _add_round_scalars(writer, round_: int, n_labeled: int, metrics: Dict[str, float]) -> None:
    try:
        for k, v in metrics.items():
            writer.add_scalar(f"round/{k}", v, round_)
            writer.add_scalar(f"labels/{k}", v, n_labeled)
    finally:
        writer.close()


def log_diagnostics(tb_dir: Path, round_: int, diagnostics: Dict) -> None:
    """A strategy's per-round diagnostics: scalars, value histograms, pre-binned histograms."""
    if not diagnostics:
        return
    from torch.utils.tensorboard import SummaryWriter

    with named_write_errors(tb_dir):
        _add_diagnostics(SummaryWriter(log_dir=str(tb_dir)), round_, diagnostics)


def _add_diagnostics(writer, round_: int, diagnostics: Dict) -> None:
    try:
        for k, v in diagnostics.get("scalars", {}).items():
            if np.isfinite(v):
                writer.add_scalar(f"acquisition/{k}", v, round_)
        for k, v in diagnostics.get("histograms", {}).items():
            if len(v):
                writer.add_histogram(f"acquisition/{k}", np.asarray(v), round_)
        for k, (edges, counts) in diagnostics.get("raw_histograms", {}).items():
            if counts.sum():
                centres = 0.5 * (edges[1:] + edges[:-1])
                writer.add_histogram_raw(f"acquisition/{k}_log10", min=float(edges[0]), max=float(edges[-1]),
                                         num=int(counts.sum()), sum=float((centres * counts).sum()),
                                         sum_squares=float((centres ** 2 * counts).sum()),
                                         bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
                                         global_step=round_)
    finally:
        writer.close()


def selection_descriptors(acquired: List, labeled_before: List) -> Dict[str, float]:
    """What a round bought, from the labels: mean atoms, mean label max |F| (eV/Å) and energy per
    atom, trajectories (``info['system_key']``) covered, and the share of frames whose trajectory was
    already labeled or picked twice in the round (near-duplicates)."""
    from al_lightning import keys as K

    if not acquired:
        return {}
    fmax = [float(np.linalg.norm(a.arrays[K.REF_FORCES], axis=1).max()) for a in acquired if K.REF_FORCES in a.arrays]
    epa = [float(a.info[K.REF_ENERGY]) / len(a) for a in acquired if K.REF_ENERGY in a.info]
    out = {"n": len(acquired), "atoms_mean": float(np.mean([len(a) for a in acquired]))}
    if fmax:
        out["label_max_force_mean"] = float(np.mean(fmax))
    if epa:
        out["label_energy_per_atom_mean"] = float(np.mean(epa))
    keys = [a.info.get("system_key") for a in acquired]
    if all(k is not None for k in keys):
        before = {a.info.get("system_key") for a in labeled_before}
        seen, dup = set(before), 0
        for k in keys:
            dup += k in seen
            seen.add(k)
        out.update(systems=len(set(keys)), near_duplicates=dup / len(keys))
    return out
