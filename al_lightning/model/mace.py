"""Build, load and partially freeze mace-torch models (docs/design.md §3 ``model/``).

* :class:`MACEConfig` — architecture hyper-parameters (a tiny CPU default).
* :func:`fit_e0s` — per-element reference energies by least squares, warning when the
  compositions are rank-deficient (mace's own helper silently returns a min-norm fit).
* :func:`model_e0s` / :func:`set_e0s` — read / write a model's E0s (:mod:`al_lightning.model.e0s`
  re-estimates a foundation's on the labeled set, mace's ``--E0s estimated``).
* :func:`build_mace` — ``MACE`` / ``ScaleShiftMACE`` with E0s, avg_num_neighbors and
  scale/shift computed from the labeled graphs.
* :func:`load_foundation` — a user-named model file (the only ``weights_only=False`` load):
  refuses TorchScript files, selects one head of a multi-head file (or keeps them all for
  replay, :func:`replay_heads`).
* :func:`set_trainable` — freeze / unfreeze parameters by name patterns.
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from e3nn import o3
from mace import modules
from mace.tools import AtomicNumberTable

from al_lightning import keys as K


@dataclass
class MACEConfig:
    """MACE architecture (defaults: tiny, CPU friendly). ``scale_shift`` → ScaleShiftMACE."""

    r_max: float = 4.5
    num_bessel: int = 8
    num_polynomial_cutoff: int = 5
    max_ell: int = 2
    num_interactions: int = 2
    hidden_irreps: str = "16x0e+16x1o"
    mlp_irreps: str = "16x0e"
    correlation: int = 2
    radial_mlp: List[int] = field(default_factory=lambda: [32, 32])
    scale_shift: bool = True
    interaction: str = "RealAgnosticResidualInteractionBlock"

    def __post_init__(self) -> None:
        if self.r_max <= 0:
            raise ValueError(f"model r_max must be > 0, got {self.r_max}")
        if self.num_interactions < 1:
            raise ValueError(f"model num_interactions must be >= 1, got {self.num_interactions}")
        for name in ("hidden_irreps", "mlp_irreps"):
            try:
                o3.Irreps(getattr(self, name))
            except Exception as exc:
                raise ValueError(f"model {name}={getattr(self, name)!r} is not valid e3nn irreps ({exc})") from None
        if not hasattr(modules.interaction_classes, "get") or self.interaction not in modules.interaction_classes:
            raise ValueError(f"model interaction {self.interaction!r} unknown; one of {sorted(modules.interaction_classes)}")


def z_table_from(elements: Sequence["str | int"]) -> AtomicNumberTable:
    """Sorted AtomicNumberTable from symbols or atomic numbers."""
    zs = set()
    for e in elements:
        if isinstance(e, str):
            if e not in chemical_symbols[1:]:
                raise ValueError(f"unknown element symbol {e!r}")
            zs.add(chemical_symbols.index(e))
        else:
            zs.add(int(e))
    return AtomicNumberTable(sorted(zs))


E0S_HINT = ("pass explicit e0s, e.g. --model.e0s '{H: -1.1, O: -4.2}' (eV per element), "
            "or, fine-tuning a foundation, --model.e0s foundation (keep its E0s)")


def lstsq_e0s(counts: np.ndarray, energies: np.ndarray, zs: Sequence[int], what: str = "E0 fit") -> np.ndarray:
    """(n_elements,) least-squares x with counts (S, n_elements) @ x ≈ energies (S,).

    Elements absent from every structure get 0. Warns (UserWarning) when the composition
    matrix of the present elements is rank-deficient (minimum-norm solution, not unique).
    """
    present = counts.sum(0) > 0
    out = np.zeros(counts.shape[1])
    sol, _, rank, _ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    out[present] = sol
    if rank < present.sum():
        names = [chemical_symbols[z] for z, p in zip(zs, present) if p]
        warnings.warn(
            f"{what} is rank-deficient (rank {rank} < {int(present.sum())} elements {names}): "
            f"the least-squares E0s are a minimum-norm solution; {E0S_HINT}", UserWarning, stacklevel=3)
    return out


def fit_e0s(structures: Sequence[Atoms], z_table: AtomicNumberTable) -> np.ndarray:
    """(n_elements,) E0s minimising Σ_s (E_s − Σ_i E0[Z_i])² over labeled structures.

    Warns (UserWarning) when the composition matrix is rank-deficient: the returned
    minimum-norm solution is then not unique; pass explicit E0s in that case.
    """
    if len(structures) == 0:
        raise ValueError("fit_e0s: no labeled structures")
    counts = np.zeros((len(structures), len(z_table)))
    energies = np.zeros(len(structures))
    index = {z: i for i, z in enumerate(z_table.zs)}
    for s, atoms in enumerate(structures):
        for z in atoms.numbers:
            counts[s, index[int(z)]] += 1
        energies[s] = atoms.info[K.REF_ENERGY]
    return lstsq_e0s(counts, energies, z_table.zs)


def hash_weights(h, net: torch.nn.Module):
    """Feed every state_dict entry of ``net`` (name and bytes) into the hashlib object ``h``; returns ``h``."""
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h


def model_e0s(model: torch.nn.Module, head: Optional[int] = None) -> np.ndarray:
    """(n_elements,) E0s of a single-head MACE model (``atomic_energies_fn``), in eV; of head index
    ``head`` of a multi-head one."""
    buf = model.atomic_energies_fn.atomic_energies
    if head is not None:
        buf = buf[head]
    elif buf.dim() > 1 and buf.shape[0] != 1:
        raise ValueError(f"model has {buf.shape[0]} heads of E0s: select one head first")
    return buf.detach().reshape(-1).cpu().double().numpy()


def set_e0s(model: torch.nn.Module, e0s: np.ndarray, head: Optional[int] = None) -> None:
    """Write (n_elements,) E0s into a single-head model's ``atomic_energies_fn`` (in place); into
    the row of head index ``head`` of a multi-head one (the other heads' E0s stay)."""
    buf = model.atomic_energies_fn.atomic_energies
    if head is not None:
        buf = buf[head]
    e0s = np.asarray(e0s, dtype=float).reshape(-1)
    if e0s.size != buf.numel():
        raise ValueError(f"set_e0s: {e0s.size} values for a model with E0 buffer of shape {tuple(buf.shape)}")
    with torch.no_grad():
        buf.copy_(torch.as_tensor(e0s, dtype=buf.dtype, device=buf.device).reshape(buf.shape))


def graph_statistics(loader, e0s: np.ndarray) -> Dict[str, float]:
    """avg_num_neighbors, mean interaction energy per atom and force RMS from mace's helpers."""
    avg = float(modules.compute_avg_num_neighbors(loader))
    mean, rms = modules.compute_mean_rms_energy_forces(loader, atomic_energies=e0s)
    mean, rms = float(np.ravel(mean)[0]), float(np.ravel(rms)[0])  # TRAPS: 1-element arrays
    return {"avg_num_neighbors": avg, "shift": mean, "scale": rms if rms > 1e-8 else 1.0}


def build_mace(cfg: MACEConfig, z_table: AtomicNumberTable, e0s: np.ndarray, stats: Dict[str, float]) -> torch.nn.Module:
    """A fresh MACE (or ScaleShiftMACE) in the current default dtype."""
    kwargs = dict(
        r_max=cfg.r_max, num_bessel=cfg.num_bessel, num_polynomial_cutoff=cfg.num_polynomial_cutoff,
        max_ell=cfg.max_ell, interaction_cls=modules.interaction_classes[cfg.interaction],
        interaction_cls_first=modules.interaction_classes[cfg.interaction],
        num_interactions=cfg.num_interactions, num_elements=len(z_table),
        hidden_irreps=o3.Irreps(cfg.hidden_irreps), MLP_irreps=o3.Irreps(cfg.mlp_irreps),
        atomic_energies=np.asarray(e0s, dtype=float), avg_num_neighbors=stats["avg_num_neighbors"],
        atomic_numbers=list(z_table.zs), correlation=cfg.correlation, gate=torch.nn.functional.silu,
        radial_MLP=list(cfg.radial_mlp),
    )
    if cfg.scale_shift:
        return modules.ScaleShiftMACE(atomic_inter_scale=stats["scale"], atomic_inter_shift=stats["shift"], **kwargs)
    return modules.MACE(**kwargs)


_TRUST_NOTED: set = set()


def _torchscript_hint(path: Path) -> Optional[str]:
    """The one-line refusal for a TorchScript archive (None for an eager pickle)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if not any("/code/" in n or n.split("/")[-1] == "constants.pkl" for n in names):
        return None
    eager = (path.with_name(path.name[: -len("_compiled.model")] + ".model")
             if path.name.endswith("_compiled.model") else "the non-compiled .model written next to it")
    return (f"foundation model {path}: a TorchScript (compiled) file; the NTK feature hooks need the eager "
            f"model: pass {eager} instead")


SHIPPED_BACKBONES = ("emt", "xtb")  # model.foundation names of the backbones installed with the package


def foundation_path(name_or_path: "str | Path") -> Path:
    """A shipped backbone's file for its name (``emt``: the EMT backbone, ``xtb``: the molecular
    one; installed with the package under al_lightning/models/), else the path as given."""
    if str(name_or_path) in SHIPPED_BACKBONES:
        return Path(__file__).resolve().parents[1] / "models" / f"{name_or_path}_foundation.model"
    return Path(name_or_path).expanduser()


def check_foundation_file(path: "str | Path") -> Path:
    """The checks that need no unpickling (a dry run can call them): the file exists and is
    not TorchScript. Raises FileNotFoundError / ValueError with one line. ``path``: a file or the
    name of a shipped backbone (:func:`foundation_path`)."""
    path = foundation_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"foundation model {path}: file not found")
    refusal = _torchscript_hint(path)
    if refusal:
        raise ValueError(refusal)
    return path


def load_foundation(path: "str | Path", head: Optional[str] = None, map_location: str = "cpu",
                    keep_heads: bool = False) -> torch.nn.Module:
    """Load a MACE model file the user named (pickled module: ``weights_only=False`` here only).

    A TorchScript file (mace's ``*_compiled.model``) is refused: the NTK hooks need the eager
    module. A multi-head file is reduced to one head (``head``; default as mace does: the first
    head that is not ``pt_head``), with mace's own ``remove_pt_head``; with ``keep_heads`` it
    keeps all its heads (``head`` is checked; :func:`replay_heads` picks the pair replay uses).
    """
    path = check_foundation_file(path)
    if path.resolve() not in _TRUST_NOTED:
        import logging

        from lightning.fabric.utilities.rank_zero import rank_zero_only

        _TRUST_NOTED.add(path.resolve())
        if rank_zero_only.rank == 0:  # warning level: shown even when the CLI quiets Lightning's info lines
            logging.getLogger("lightning.pytorch.utilities.rank_zero").warning(
                f"al-lightning: unpickling foundation model {path}: a pickled model file can run arbitrary code; "
                "load only files from a trusted source")
    try:
        model = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"foundation model {path}: not loadable by torch.load ({type(exc).__name__}: {exc})") from None
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"foundation model {path}: a TorchScript (compiled) module; the NTK feature hooks need "
                         "the eager model: pass the non-compiled .model file")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers") or not hasattr(model, "r_max"):
        raise ValueError(f"foundation model {path}: not a MACE model (got {type(model).__name__})")
    model = model.to(torch.get_default_dtype())
    if keep_heads and len(model_heads(model)) > 1:
        _check_head(model, head, path)
        return model
    return select_head(model, head, path)


def model_heads(model: torch.nn.Module) -> List[str]:
    """The head names of a MACE model (``["Default"]`` for a file without ``heads``)."""
    return [str(h) for h in getattr(model, "heads", None) or ["Default"]]


def _check_head(model: torch.nn.Module, head: Optional[str], path) -> List[str]:
    heads = model_heads(model)
    if head is not None and head not in heads:
        raise ValueError(f"foundation model {path}: no head {head!r}; its heads are {heads}")
    return heads


def default_head(heads: Sequence[str]) -> str:
    """mace's default head of a multi-head file: the first that is not ``pt_head``."""
    return next((h for h in heads if h != "pt_head"), heads[0])


def select_head(model: torch.nn.Module, head: Optional[str], path: "str | Path" = "model") -> torch.nn.Module:
    """The single-head model of ``head`` (mace's ``remove_pt_head``); a single-head model as is.

    ``head=None`` on a multi-head model takes the first head that is not ``pt_head``, as
    ``mace_run_train`` does, and says so in one log line.
    """
    heads = _check_head(model, head, path)
    if len(heads) == 1:
        return model
    if head is None:
        head = default_head(heads)
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"al-lightning: foundation model {path} has heads {heads}: using {head!r} "
                       "(mace's default, the first that is not 'pt_head'); set model.head to choose")
    from mace.tools.scripts_utils import remove_pt_head

    try:
        single = remove_pt_head(model, head)
    except Exception as exc:
        raise ValueError(f"foundation model {path}: cannot select head {head!r} ({type(exc).__name__}: {exc})") from None
    return single.to(next(model.parameters()).dtype)


def replay_heads(model: torch.nn.Module, head: Optional[str], replay_head: Optional[str],
                 path: "str | Path" = "model") -> Optional[Tuple[str, str]]:
    """(campaign head, replay head) of a multi-head model kept whole for replay; None for a
    single-head one (replay then trains its one head). The campaign head is ``head`` (default: mace's,
    :func:`default_head`), the replay head ``replay_head`` (default: ``pt_head``, else the one other
    head). Raises a one-line ValueError for a replay head that is missing, the campaign head, or given
    for a single-head model."""
    heads = _check_head(model, head, path)
    if len(heads) == 1:
        if replay_head is not None:
            raise ValueError(f"model.replay.head {replay_head!r}: foundation model {path} has one head {heads}, "
                             "which replay trains; drop model.replay.head")
        return None
    head = head or default_head(heads)
    others = [h for h in heads if h != head]
    if replay_head is None:
        if "pt_head" not in others and len(others) > 1:
            raise ValueError(f"model.replay.head: foundation model {path} has heads {heads}; name the one replay "
                             f"trains (one of {others})")
        replay_head = "pt_head" if "pt_head" in others else others[0]
    if replay_head not in others:
        why = "is the campaign head (model.head)" if replay_head == head else "is not a head of the file"
        raise ValueError(f"model.replay.head {replay_head!r} {why}; name another of the heads of {path}: {others}")
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(f"al-lightning: foundation model {path} has heads {heads}: the campaign's labels train {head!r} "
                   f"(model.head), replay frames {replay_head!r} (model.replay.head)")
    return head, replay_head


def model_z_table(model: torch.nn.Module) -> AtomicNumberTable:
    return AtomicNumberTable([int(z) for z in model.atomic_numbers])


def model_r_max(model: torch.nn.Module) -> float:
    return float(model.r_max)


def set_trainable(model: torch.nn.Module, patterns: Optional[Sequence[str]]) -> List[str]:
    """Train only parameters whose names match any fnmatch pattern (None/empty: all).

    Returns the trainable names; raises ValueError naming a pattern that matches nothing.
    """
    names = [n for n, _ in model.named_parameters()]
    if not patterns:
        for p in model.parameters():
            p.requires_grad_(True)
        return names
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ValueError(f"trainable pattern {pat!r} matches no parameter (e.g. {names[:3]})")
    chosen = []
    for n, p in model.named_parameters():
        on = any(fnmatch.fnmatchcase(n, pat) for pat in patterns)
        p.requires_grad_(on)
        if on:
            chosen.append(n)
    return chosen


@contextlib.contextmanager
def on_device(net: torch.nn.Module, device):
    """Run a block with ``net`` on ``device``, then put it back where it was
    (Lightning's teardown leaves the module on CPU before ``on_fit_end``)."""
    home = next(net.parameters()).device
    net.to(device)
    try:
        yield net
    finally:
        net.to(home)
