"""A round's finished fit, kept until the round is recorded (docs/design.md §2, §8).

When a round's fit ends, before anything is acquired, its weights and what the round record says
about the fit (epochs, best epoch, validation metrics, seconds) go to ``round_NNN/fit_state.pt``.
A rerun of the round — after a crash in the pool pass or in labeling, or a file hand-off that
stopped for labels — loads them instead of fitting again, as long as the labeled set is the one
they were fitted on; so a resumed pool pass finds its state valid even where a refit would not be
bitwise the same (GPUs). The file is removed once the round's checkpoint is written. Tensors,
numbers and strings only (loads weights-only).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from al_lightning import console
from al_lightning.atomic import atomic_write

FILE = "fit_state.pt"


def fit_key(datamodule, round_: int, seed: int) -> str:
    """sha256 of what the fit learned from: the round, the seed, the labeled and excluded pool ids."""
    state = datamodule.state_dict()
    what = {"round": round_, "seed": seed, "labeled": state["labeled_ids"], "excluded": state["excluded_ids"],
            "initial": datamodule.initial_indices()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def save_fit(path: Path, key: str, net: torch.nn.Module, summary: Dict[str, Any]) -> None:
    """``net``'s weights and the fit's ``summary`` (epochs, best_epoch, val, fit_seconds), atomically."""
    state = {"key": key, "net": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "summary": summary}
    atomic_write(path, lambda fh: torch.save(state, fh), binary=True)


def load_fit(path: Path, key: str) -> Optional[Dict[str, Any]]:
    """The kept fit if ``path`` holds one of this labeled set; otherwise None (said in one line)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # cut, or not ours: the round is fitted again, nothing is lost
        console.say(f"{path}: unreadable ({type(exc).__name__}); fitting the round again")
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        console.say(f"{path}: fitted on another labeled set; fitting the round again")
        return None
    return state
