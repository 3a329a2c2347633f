"""What a campaign prints: Lightning's boilerplate silenced unless ``--verbose``, one line per event."""

from __future__ import annotations

import logging
import sys

from lightning.pytorch.callbacks import TQDMProgressBar

# Lightning's info lines: "GPU available…", "TPU available…", the litlogger tip, "Seed set to…",
# "`Trainer.fit` stopped…" — all logged at INFO by these loggers.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def quiet_lightning(verbose: bool = False) -> None:
    """Silence Lightning's INFO boilerplate (warnings still show); ``verbose`` restores it."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def interactive() -> bool:
    """Whether stderr is a terminal: progress bars are shown only then (unless asked for)."""
    return sys.stderr.isatty()


def say(message: str) -> None:
    """One console line (stderr, so stdout stays machine-readable), prefixed ``al-lightning:``."""
    print(f"al-lightning: {message}", file=sys.stderr, flush=True)


def round_summary(record: dict) -> str:
    """One line per finished round: labels, epochs, times and the test errors per split.

    ``round 2: 60 labels, 14 epochs (best 9), fit 31 s, acquire 8 s | forces MAE (eV/Å) id 0.123
    ads 0.201 cat 0.150 both 0.198 | energy MAE (eV/atom) id 0.012 …``
    """
    from al_lightning.campaign.plotting import ordered_splits

    metrics = record["metrics"]
    splits = [s for s in ordered_splits(k.split("/")[0] for k in metrics) if s.startswith("test")]
    short = {s: s.replace("test_ood_", "").replace("test_", "") for s in splits}
    epochs = ""
    if record.get("epochs") is not None:
        best = f" (best {record['best_epoch'] + 1})" if record.get("best_epoch") is not None else ""
        epochs = f", {record['epochs']} epochs{best}"
    head = (f"round {record['round']}: {record['n_labeled']} labels{epochs}, fit {record.get('fit_seconds', 0):.0f} s"
            + (f", acquire {record['acquire_seconds']:.0f} s" if record.get("selected_ids") else "")
            + (f" incl. {len(record['member_fits'])} member fits" if record.get("member_fits") else ""))
    parts = [head]
    for metric, name, unit in (("forces_mae", "forces MAE", "eV/Å"), ("energy_mae", "energy MAE", "eV/atom")):
        vals = " ".join(f"{short[s]} {metrics[f'{s}/{metric}']:.4f}" for s in splits if f"{s}/{metric}" in metrics)
        if vals:
            parts.append(f"{name} ({unit}) {vals}")
    return " | ".join(parts)


def stalled_round(record: dict) -> "str | None":
    """A warning when a fit of a round after the first (the main model's, or a committee member's)
    kept the weights of its first epoch although it ran on: its new labels pushed val/loss up and
    the fit never came back below that, so the round's labels are barely learned
    (docs/results/PROTOCOL.md, amendment 2). None otherwise."""
    if record.get("round", 0) == 0:
        return None
    fits = [("the fit", record)] + [(f"member {f.get('name', i)}", f) for i, f in enumerate(record.get("member_fits", []))]
    stalled = [(who, f["epochs"]) for who, f in fits
               if f.get("best_epoch") == 0 and f.get("epochs") is not None and f["epochs"] >= 3]
    if not stalled:
        return None
    which = ", ".join(f"{who} (of {n} epochs)" for who, n in stalled)
    return (f"round {record['round']}: {which} kept the weights of its first epoch: val/loss rose on the new labels "
            "and never recovered, so they are barely learned; give rounds more epochs (trainer.max_epochs, "
            "campaign.early_stopping_patience: null) or another model.lr")


def campaign_start(name: str, directory, start: int, rounds: int, done: list, selection_stored: bool = False) -> str:
    """The line a campaign opens with: a fresh start, "resuming at round k" or "nothing to do".
    ``selection_stored``: round ``start`` already chose its structures (a crash or a file hand-off
    stopped it while labeling)."""
    if start > rounds:
        return (f"campaign {name!r} in {directory}: nothing to do, all {rounds} acquisitions are done "
                f"(results in campaign.json and report.md; more rounds: --campaign.rounds {rounds + 1})")
    if done or selection_stored:
        stored = " with its selection stored (labels not yet bought are asked for)" if selection_stored else ""
        return (f"campaign {name!r} in {directory}: resuming at round {start} of {rounds}{stored} "
                f"({len(done)} round(s) stored, {sum(len(r['selected_ids']) for r in done)} labels bought)")
    return f"campaign {name!r} in {directory}: {rounds} acquisitions, {rounds + 1} fits"


class EpochBar(TQDMProgressBar):
    """Lightning's TQDM bar without the logger's ``v_num`` (the round is in the TensorBoard path);
    the module puts only ``train/loss`` and ``val/forces_mae`` on it (the rest: TensorBoard)."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        items.pop("train/loss_epoch", None)  # the step value is live; the epoch mean is in TensorBoard
        return items
