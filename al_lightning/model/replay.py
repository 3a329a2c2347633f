"""Foundation replay (``model.replay``; docs/design.md §7b): what the fine-tune keeps seeing of the
foundation's domain, and the split that measures how much of it the fine-tune kept.

``source``:
* ``pretraining`` — frames of the foundation's own training data, regenerated from the data spec in
  its model card (``<model>.json``, ``data.kind`` ``emt_foundation`` or ``xtb_foundation``: the shipped
  backbones). A generator's systems depend only on (seed, split, index), so ``size`` frames are the
  first systems of the very data the backbone was trained on. ``test_foundation``: frames of its
  ``val`` split (systems it was not trained on).
* ``pseudolabel`` — ``structures`` (a file), or a seeded sample of the pool, labeled once by the
  frozen foundation and cached (any ``.model``, offline). A pool sample is reserved: those ids are
  never offered for acquisition, so a bought label never meets its pseudolabel. ``test_foundation``:
  ``test_size`` more of them, held back (the foundation's own predictions: retention = agreement).
* null — no replay, no ``test_foundation``.

Each training epoch draws ``round(ratio · n_labeled)`` replay frames (seeded by seed, round and
epoch) next to every campaign label; a replay frame's loss terms weigh ``weight`` (a campaign label:
1). ``ratio: 0`` trains without replay but still measures ``test_foundation`` (the control arm).
PV's training side, the pool and the labeled set never contain replay frames.

A multi-head foundation file (MACE's multihead fine-tuning output, e.g. heads ``["Default",
"pt_head"]``) keeps its heads: the campaign's labels, validation, tests and the pool run through the
campaign head (``model.head``), replay frames and ``test_foundation`` through the replay head
(``head``, default ``pt_head``); the layers below the readouts are shared, as in mace's multihead
fine-tuning. A single-head file trains its one head on both (``head`` is refused there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

SOURCES = ("pretraining", "pseudolabel")


@dataclass(frozen=True)
class ReplayConfig:
    """``model.replay`` options.

    Args:
        source: ``pretraining``, ``pseudolabel`` or null (off); see the module docstring.
        weight: loss weight of a replay frame relative to a campaign label (> 0); 0.3, the tuning's
            choice (docs/results/replay: weight 1 cost 8–20 % in distribution, 0.3 nothing measurable).
        ratio: replay frames drawn per labeled structure in every epoch (0: none, test_foundation only).
        size: frames in the replay set.
        test_size: frames held back as the ``test_foundation`` split (0: none).
        structures: ``pseudolabel`` only: a file of structures to pseudolabel (null: a sample of the pool).
        seed: seed of the pool sample and of each epoch's draw.
        head: a multi-head foundation's head that replay frames train (default: ``pt_head``, else the
            one head other than ``model.head``); refused for a single-head file.
    """

    source: Optional[str] = None
    weight: float = 0.3
    ratio: float = 1.0
    size: int = 400
    test_size: int = 100
    structures: Optional[str] = None
    seed: int = 0
    head: Optional[str] = None

    def __post_init__(self) -> None:
        checks = [(self.source is None or self.source in SOURCES,
                   f"model.replay.source must be one of {SOURCES} or null, got {self.source!r}"),
                  (self.weight > 0, f"model.replay.weight must be > 0, got {self.weight}"),
                  (self.ratio >= 0, f"model.replay.ratio must be >= 0, got {self.ratio}"),
                  (self.size >= 1 and self.test_size >= 0,
                   f"model.replay.size must be >= 1 and test_size >= 0, got {self.size}, {self.test_size}"),
                  (self.structures is None or self.source == "pseudolabel",
                   "model.replay.structures is read by source: pseudolabel only"),
                  (self.head is None or self.source is not None,
                   "model.replay.head is read with a replay source only (set model.replay.source)")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def settings(cfg: ReplayConfig) -> Dict:
    """The options as a dict (the campaign fingerprint, the pseudolabel cache key); ``head`` only
    when set, so a single-head campaign's fingerprint and cache key are those of before it existed."""
    out = asdict(cfg)
    if out["head"] is None:
        del out["head"]
    return out


def model_card(foundation: str) -> Dict:
    """The model card (``<model>.json`` beside the file) of a foundation, or {} when there is none."""
    from al_lightning.model.mace import foundation_path

    card = foundation_path(foundation).with_suffix(".json")
    return json.loads(card.read_text()) if card.is_file() else {}


def pretraining_files(cfg: ReplayConfig, foundation: str) -> Dict[str, Path]:
    """{"replay": …, "test_foundation": …} from the foundation's own data (generated once, cached)."""
    from al_lightning.data.foundation import FoundationSpec
    from al_lightning.data.xtb import XTBFoundationSpec

    data = model_card(foundation).get("data") or {}
    specs = {"emt_foundation": FoundationSpec, "xtb_foundation": XTBFoundationSpec}
    if data.get("kind") not in specs:
        raise ValueError(f"model.replay.source: pretraining needs the foundation's training data; the card of "
                         f"{foundation!r} names none (the shipped backbones emt and xtb have it); use source: "
                         "pseudolabel, which works for any .model")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in data["spec"].items() if k != "sizes"}
    sizes = {"train": cfg.size, "val": cfg.test_size} if cfg.test_size else {"train": cfg.size}
    paths = specs[data["kind"]](sizes=sizes, **options).ensure()
    return {"replay": paths["train"], **({"test_foundation": paths["val"]} if cfg.test_size else {})}


def pool_sample(cfg: ReplayConfig, n_pool: int) -> np.ndarray:
    """The pool ids a pool-sample pseudolabel replay takes (sorted; replay first, then test)."""
    if cfg.size + cfg.test_size > n_pool:
        raise ValueError(f"model.replay: size + test_size = {cfg.size + cfg.test_size} is more than the pool's "
                         f"{n_pool} structures")
    return np.random.default_rng([cfg.seed, 7]).choice(n_pool, size=cfg.size + cfg.test_size, replace=False)


def _content_key(cfg: ReplayConfig, net, frames) -> str:
    """What the pseudolabels depend on: the options, the labeling network's weights, the structures."""
    from al_lightning.model.mace import hash_weights

    h = hash_weights(hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode()), net)
    for atoms in frames:
        h.update(atoms.numbers.tobytes())
        h.update(np.ascontiguousarray(atoms.positions).tobytes())
    return h.hexdigest()[:16]


def pseudolabel(net, frames, batch_size: int = 16, head: Optional[str] = None):
    """``frames`` labeled by ``net`` (energy and forces as REF_energy / REF_forces), in eval mode;
    by its head ``head`` (a multi-head net; None: a single-head one)."""
    import torch

    from al_lightning import keys as K
    from al_lightning.data.graphs import GraphDataset, collate
    from al_lightning.model.mace import model_heads, model_r_max, model_z_table

    data = GraphDataset(lambda i: (i, frames[i]), len(frames), model_z_table(net), model_r_max(net),
                        heads=model_heads(net) if head else None, head=head)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
    out, was_training = [], net.training
    net.eval()
    try:
        for batch in loader:
            pred = net(batch.to_dict(), training=False, compute_force=True)
            energies = pred[K.OUT_ENERGY].detach().cpu().numpy()
            forces = pred[K.OUT_FORCES].detach().cpu().numpy()
            out += [(float(e), forces[batch[K.BATCH].numpy() == g]) for g, e in enumerate(energies)]
    finally:
        net.train(was_training)
    labeled = []
    for atoms, (energy, f) in zip(frames, out):
        atoms = atoms.copy()
        atoms.calc = None
        atoms.info[K.REF_ENERGY] = energy
        atoms.arrays[K.REF_FORCES] = f
        labeled.append(atoms)
    return labeled


def pseudolabel_files(cfg: ReplayConfig, net, datamodule) -> "tuple[Dict[str, Path], np.ndarray]":
    """({"replay": …, "test_foundation": …}, reserved pool ids): ``cfg.structures`` or a pool sample,
    labeled by ``net`` (the frozen foundation, E0s as decided; its head ``cfg.head`` when set) once
    and cached by content."""
    from al_lightning.data.cache import cache_root
    from al_lightning.data.io import read_structures, write_extxyz

    if cfg.structures:
        frames, reserved = read_structures(cfg.structures, require_labels=False), np.empty(0, dtype=np.int64)
        if len(frames) < cfg.size + cfg.test_size:
            raise ValueError(f"model.replay.structures {cfg.structures}: {len(frames)} structures, fewer than "
                             f"size + test_size = {cfg.size + cfg.test_size}")
        frames = [frames[i] for i in np.random.default_rng([cfg.seed, 7]).permutation(len(frames))[: cfg.size + cfg.test_size]]
    else:
        reserved = pool_sample(cfg, datamodule.pool_size)
        pool = datamodule.pool_dataset()
        frames = [pool.get_atoms(int(i))[1] for i in reserved]
        for i, atoms in zip(reserved, frames):
            atoms.info["pool_id"] = int(i)
    folder = cache_root() / "replay" / _content_key(cfg, net, frames)
    files = {"replay": folder / "replay.extxyz"}
    if cfg.test_size:
        files["test_foundation"] = folder / "test_foundation.extxyz"
    if not all(p.exists() for p in files.values()):
        labeled = pseudolabel(net, frames, head=cfg.head)
        for name, part in (("test_foundation", labeled[cfg.size:]), ("replay", labeled[: cfg.size])):
            if name in files:  # each file atomically: a cache is complete when both exist
                write_extxyz(files[name], part)
    return files, reserved
