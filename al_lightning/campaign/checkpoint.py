"""Round checkpoints (``round_NNN/checkpoint.pt``) that hold only tensors and plain types.

They are written with every numpy array turned into a tensor and read with
``torch.load(weights_only=True)``, so a checkpoint from an untrusted campaign directory cannot
run code: a file referencing any other Python object is refused (one line) before that object
is built.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from al_lightning.atomic import atomic_write


def save_checkpoint(path: Path, ckpt: Dict[str, Any]) -> None:
    """Write ``ckpt`` (``net`` state_dict, ``datamodule`` state, ``round``) atomically, tensors-only."""
    atomic_write(path, lambda fh: torch.save(_tensors(ckpt), fh), binary=True)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A round checkpoint (``net`` state_dict, ``datamodule`` state, ``round``), loaded weights-only:
    a file holding any other Python object is refused before that object is built; a missing,
    empty or truncated file is refused in one line too."""
    from al_lightning.campaign.state import checkpoint_problem

    problem = checkpoint_problem(Path(path))
    if problem:
        raise ValueError(problem)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # older versions pickled numpy arrays; or a hostile file
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"it references {found.group(1)}" if found else type(exc).__name__
        raise ValueError(f"{path}: refused: not a tensors-only campaign checkpoint ({what}; loading it fully "
                         f"could run code); delete {path.parent.name}/ to redo that round or use a new "
                         "campaign_dir") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # a damaged zip archive
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:120]}); "
                         f"delete {path.parent.name}/ to redo that round") from None
    if not isinstance(ckpt, dict) or not {"net", "datamodule"} <= set(ckpt):
        raise ValueError(f"{path}: not a campaign checkpoint (no net / datamodule state); delete "
                         f"{path.parent.name}/ to redo that round or use a new campaign_dir")
    ckpt["datamodule"] = _arrays(ckpt["datamodule"])
    return ckpt


def _tensors(obj):
    """``obj`` with every numpy array turned into a tensor (so that ``weights_only=True`` loads it)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors(v) for v in obj)
    return obj


def _arrays(obj):
    """Inverse of :func:`_tensors` for the datamodule state (its records hold numpy arrays)."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_arrays(v) for v in obj)
    return obj
