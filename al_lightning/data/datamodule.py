"""ActiveDataModule: the growing labeled set, validation, named test splits and the pool.

Split files come from an embedded dataset (``emt``: EMT catalysis, ``xtb``: GFN2-xTB
reactive molecules; generated and cached on first use) or from user files (``files``: split → path, any ASE format). Test splits are
every split whose name starts with ``test``. Structures become graphs lazily in DataLoader
workers. Evaluation loaders shard by ``rank::world`` without padding (no duplicates), so
distributed metrics equal single-process ones. Pool ids are stable global indices into the
pool file (file order).
"""

from __future__ import annotations


from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import lightning.pytorch as pl
import numpy as np
from ase import Atoms
from torch.utils.data import DataLoader, Subset

from al_lightning import keys as K
from al_lightning.data.batches import ShardBatches
from al_lightning.data.graphs import GraphDataset, collate
from al_lightning.data.labeled import LabeledSet
from al_lightning.data.io import DataError, normalise
from al_lightning.data.readers import has_forces, open_structures
from al_lightning.data.replay import MixSampler, ReplayMix
from al_lightning.data.cache import cache_root
from al_lightning.data.synthetic import EMTCatalysisSpec
from al_lightning.data.xtb import XTBMoleculesSpec

REQUIRED = ("initial", "val")


class ActiveDataModule(pl.LightningDataModule):
    """Labeled set (``initial`` + acquired), ``val``, ``test*`` splits and the ``pool``.

    Args:
        emt: spec of the embedded EMT catalysis dataset (default when neither ``xtb`` nor
            ``files`` is given).
        xtb: spec of the embedded GFN2-xTB reactive-molecule dataset
            (:class:`al_lightning.data.xtb.XTBMoleculesSpec`).
        files: split name → structure file, or a dict ``{path: …, <reader option>: …}``
            (e.g. ``{path: t1x.h5, split: test}``; ``format``, ``energy_key`` and ``forces_key``
            there override the data-wide ones for that file); needs ``initial`` and ``val``; ``pool``
            for campaigns; every ``test*`` key is a test split.
        format: ``auto`` (ASE formats, OC20 S2EF chunks), ``ase``, ``oc20``, ``t1x``, ``rgd1``.
        energy_key: key of the energy labels (None: the format's default; ASE files ``REF_energy``,
            or ``energy`` for calculator results).
        forces_key: key of the force labels (None: the format's default; ASE files ``REF_forces``,
            or ``forces`` for calculator results).
        elements: element symbols for a freshly built model (default: scanned from files).
        batch_size: structures per training batch.
        eval_batch_size: structures per batch for validation, tests and the pool pass.
        num_workers: DataLoader worker processes building graphs (0: in the main process).
        energy_only: the labels have no forces (e.g. RGD1): the force loss switches off.
        generate_workers: processes generating the EMT dataset.
        seed: training-batch shuffling seed (the epoch and round are mixed in); None: the
            campaign's seed, which itself defaults to ``seed_everything`` (so one seed varies
            batch order, initial weights of a fresh model and the selection together).
        skip_bad_records: pool records that fail the up-front check (unreadable, NaN/inf positions or
            cell, no atoms, or — with stored labels — a missing or non-finite label) are left out of
            every acquisition with a warning, instead of stopping the run (status 2).
        initial_size: start from a seeded random subset of this many structures of the
            ``initial`` file (None: all of it); the subset follows ``seed``, so each campaign
            seed of a study starts from its own initial set (validation and tests fixed).
    """

    def __init__(self, emt: Optional[EMTCatalysisSpec] = None, xtb: Optional[XTBMoleculesSpec] = None,
                 files: Optional[Dict[str, Union[str, Dict[str, Any]]]] = None, format: str = "auto",
                 energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                 elements: Optional[List[str]] = None, batch_size: int = 8, eval_batch_size: int = 16,
                 num_workers: int = 0, generate_workers: int = 2, seed: Optional[int] = None,
                 energy_only: bool = False, initial_size: Optional[int] = None,
                 skip_bad_records: bool = False) -> None:
        super().__init__()
        self._settings = dict(emt=emt, xtb=xtb, files=files, format=format, energy_key=energy_key,
                              forces_key=forces_key, elements=elements, batch_size=batch_size,
                              eval_batch_size=eval_batch_size, num_workers=num_workers,
                              generate_workers=generate_workers, seed=seed, energy_only=energy_only,
                              initial_size=initial_size, skip_bad_records=skip_bad_records)  # for member views
        if sum(x is not None for x in (emt, xtb, files)) > 1:
            raise ValueError("data: give one of 'emt', 'xtb' or 'files' (set the others to null)")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"data batch sizes must be >= 1, got {batch_size}, {eval_batch_size}")
        if initial_size is not None and initial_size < 1:
            raise ValueError(f"data.initial_size must be >= 1 or null, got {initial_size}")
        if files is not None:
            missing = [s for s in REQUIRED if s not in files]
            if missing:
                raise ValueError(f"data.files lacks required split(s) {missing} (have {sorted(files)})")
        self.emt = emt if (emt is not None or files is not None or xtb is not None) else EMTCatalysisSpec()
        self.xtb = xtb
        self.files = {k: _entry(k, v) for k, v in files.items()} if files is not None else None
        self.format = format
        self.energy_key, self.forces_key = energy_key, forces_key
        self._elements = elements
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.generate_workers, self.seed = num_workers, generate_workers, seed
        self.energy_only, self.initial_size, self.skip_bad_records = energy_only, initial_size, skip_bad_records
        self.round = 0
        self.labeled = LabeledSet()  # acquired pool ids, their labels, exclusions (e.g. oracle failures)
        self._initial: Optional[List[int]] = None  # a member view's fixed initial records
        self.train_indices: Optional[List[int]] = None  # a member view's bootstrap resample
        self._open: Dict[str, Any] = {}
        self._pool_atoms: Optional[np.ndarray] = None
        self.replay: Optional[Dict[str, Any]] = None  # model.replay's files and settings (attach_replay)
        self._z_table, self._cutoff = None, None
        self._heads: Optional[List[str]] = None  # a multi-head model's heads (attach), None: one head
        self._head: Optional[str] = None  # the head the campaign's graphs carry (labels, splits, pool)

    # ------------------------------------------------------------------ files
    @property
    def embedded(self):
        """The embedded dataset's spec (``xtb`` or ``emt``); None for user files."""
        return None if self.files is not None else (self.xtb or self.emt)

    def split_paths(self) -> Dict[str, Path]:
        extra = {"test_foundation": self.replay["test_foundation"]} if self.replay and "test_foundation" in self.replay else {}
        if self.files is not None:
            return {**{k: Path(v["path"]).expanduser() for k, v in self.files.items()}, **extra}
        spec = self.embedded
        return {**{s: cache_root() / spec.cache_name / spec.key() / f"{s}.extxyz"
                   for s in spec.splits if spec.sizes.get(s, 0) > 0}, **extra}

    def attach_replay(self, files: Dict[str, Path], weight: float, ratio: float, seed: int,
                      reserved: Sequence[int] = (), head: Optional[str] = None) -> None:
        """Replay frames for every training epoch (``files["replay"]``), a ``test_foundation`` split
        (``files["test_foundation"]``, if given) and pool ids never offered for acquisition (``reserved``);
        ``head``: the head both carry (a multi-head model's replay head; None: the campaign's)."""
        self.replay = {**files, "weight": float(weight), "ratio": float(ratio), "seed": int(seed),
                       "reserved": sorted(int(i) for i in reserved), "head": head}

    @property
    def test_splits(self) -> List[str]:
        return [s for s in self.split_paths() if s.startswith("test")]

    def missing_files(self) -> List[Path]:
        """User files that do not exist (the embedded dataset is generated, never missing)."""
        return [] if self.files is None else [p for p in self.split_paths().values() if not p.exists()]

    def prepare_data(self) -> None:
        if self.files is None:
            self.embedded.ensure(workers=self.generate_workers)
        else:
            missing = self.missing_files()
            if missing:
                raise DataError(f"data file not found: {missing[0]}")

    def structure_file(self, split: str):
        if split not in self._open:
            paths = self.split_paths()
            if split not in paths:
                raise KeyError(f"data has no split {split!r} (have {sorted(paths)})")
            self.prepare_data()
            options = {k: v for k, v in (self.files or {}).get(split, {}).items() if k != "path"}
            fmt = options.pop("format", self.format)  # a file's own format and label keys win
            energy_key, forces_key = options.pop("energy_key", self.energy_key), options.pop("forces_key", self.forces_key)
            reader = open_structures(paths[split], fmt, energy_key, forces_key, require_labels=split != "pool",
                                     **options)
            if self.energy_only and hasattr(reader, "require_forces"):
                reader.require_forces = False
            self._open[split] = reader
        return self._open[split]

    @property
    def has_forces(self) -> bool:
        """False for energy-only data (e.g. RGD1): the force loss is then switched off."""
        return not self.energy_only and all(has_forces(self.structure_file(s)) for s in ("initial", "val"))

    def setup(self, stage: Optional[str] = None) -> None:
        for split in self.split_paths():
            self.structure_file(split)

    def validate(self, z_table=None) -> None:
        """Read every labeled / validation / test record once (pool: index only); raises
        DataError naming the file and record of the first bad one (also for elements
        outside ``z_table``)."""
        zs = set(z_table.zs) if z_table is not None else None
        for split in self.split_paths():
            f = self.structure_file(split)
            if split == "pool":
                continue
            for i in range(len(f)):
                atoms = f[i]
                if zs is not None and not set(atoms.numbers.tolist()) <= zs:
                    bad = sorted(set(atoms.numbers.tolist()) - zs)
                    raise DataError(f"{f.path}: record {i}: element(s) Z={bad} unknown to the model (knows {sorted(zs)})")

    def elements(self) -> List[str]:
        """Element symbols to build a model for (explicit, embedded, or scanned from files)."""
        if self._elements:
            return list(self._elements)
        if self.files is None:
            return list(self.embedded.elements)
        from ase.data import chemical_symbols

        zs = set()
        for split in self.split_paths():
            f = self.structure_file(split)
            for i in range(len(f)):
                zs.update(f.raw(i).numbers.tolist())
        return [chemical_symbols[z] for z in sorted(zs)]

    def attach(self, z_table, cutoff: float, heads: Optional[Sequence[str]] = None,
               head: Optional[str] = None) -> None:
        """Model facts the graphs need: element table, cutoff radius and, for a multi-head model, its
        ``heads`` and the ``head`` of the campaign's graphs (None: a single-head model)."""
        self._z_table, self._cutoff = z_table, float(cutoff)
        self._heads, self._head = (list(heads), head) if heads is not None else (None, None)

    # ------------------------------------------------------------------ labeled set
    @property
    def pool_size(self) -> int:
        return len(self.structure_file("pool"))

    def pool_atom_counts(self) -> np.ndarray:
        """Atoms per pool structure (pool_size,) int64, read once per run (the pool pass's batch budget)."""
        if self._pool_atoms is None:
            self._pool_atoms = self.structure_file("pool").atom_counts()
        return self._pool_atoms

    def initial_indices(self) -> List[int]:
        """Records of the ``initial`` file that start the labeled set (all, or a seeded subset)."""
        if self._initial is not None:
            return list(self._initial)
        n = len(self.structure_file("initial"))
        if self.initial_size is None:
            return list(range(n))
        if self.initial_size > n:
            raise DataError(f"{self.structure_file('initial').path}: data.initial_size {self.initial_size} > its "
                            f"{n} structures; lower initial_size or provide more initial structures")
        rng = np.random.default_rng([int(self.seed or 0), 104_729])
        return sorted(rng.choice(n, size=self.initial_size, replace=False).tolist())

    def labeled_structures(self) -> List[Atoms]:
        init = self.structure_file("initial")
        return [init[i] for i in self.initial_indices()] + list(self.added)

    @property
    def labeled_ids(self) -> List[int]:
        """Pool ids acquired so far, in order (read-only view of :attr:`labeled`)."""
        return list(self.labeled.ids)

    @property
    def added(self) -> List[Atoms]:
        """Their labeled structures."""
        return list(self.labeled.structures)

    def add(self, ids: Sequence[int], structures: Sequence[Atoms]) -> None:
        """Append labeled pool structures; ids are global pool ids, validated first (labels present
        and finite, forces unless the data are energy-only)."""
        for i, atoms in zip(ids, structures):
            normalise(atoms, f"label of pool id {int(i)}", require_forces=self.has_forces)
        self.labeled.add(ids, structures, self.pool_size)

    def exclude(self, ids) -> None:
        """Pool ids never to offer again (e.g. oracle failures)."""
        self.labeled.exclude(ids)

    def candidate_ids(self) -> np.ndarray:
        """Pool ids still available for acquisition (sorted; a pool sample reserved for replay is not)."""
        ids = self.labeled.candidates(self.pool_size)
        return np.setdiff1d(ids, self.replay["reserved"]) if self.replay and self.replay["reserved"] else ids

    # ------------------------------------------------------------------ loaders
    def _graphs(self, get_atoms, n: int, head: Optional[str] = None) -> GraphDataset:
        """Graphs of the campaign's head, or of ``head`` (replay frames of a multi-head model)."""
        if self._z_table is None:
            raise RuntimeError("datamodule not attached to a model: call module.build(datamodule) first")
        return GraphDataset(get_atoms, n, self._z_table, self._cutoff, heads=self._heads,
                            head=(head or self._head) if self._heads else None)

    def _loader(self, ds, sampler, batch_size: int) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=False)

    def _rank_world(self):
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def labeled_dataset(self) -> GraphDataset:
        structures = self.labeled_structures()
        n_init = len(structures) - len(self.added)
        ids = [-1 - i for i in range(n_init)] + list(self.labeled_ids)  # initial: negative ids
        return self._graphs(lambda i: (ids[i], structures[i]), len(structures))

    def stats_dataloader(self) -> DataLoader:
        ds = self.labeled_dataset()
        return self.batch_loader(ds, ShardBatches(range(len(ds)), self.eval_batch_size))

    def member_view(self, seed: int, bootstrap: bool = False) -> "ActiveDataModule":
        """A datamodule for a committee member, built from this one's settings: its own training seed
        (batch order), a copy of the labeled set and, with ``bootstrap``, a seeded bootstrap resample
        of it for training (validation, tests and the pool the same files, already open)."""
        view = ActiveDataModule(**{**self._settings, "seed": int(seed)})
        view._open, view._z_table, view._cutoff = self._open, self._z_table, self._cutoff
        view._heads, view._head = self._heads, self._head
        view._pool_atoms, view.replay = self._pool_atoms, self.replay  # a member trains with the same replay
        view.round, view.labeled = self.round, self.labeled.copy()
        view._initial = self.initial_indices()  # the main model's labeled set, whatever the view's seed
        n = len(self.labeled_structures())
        view.train_indices = np.random.default_rng(seed).integers(0, n, n).tolist() if bootstrap else None
        return view

    def train_dataloader(self) -> DataLoader:
        ds = self.labeled_dataset()
        if self.train_indices is not None:
            ds = Subset(ds, self.train_indices)
        rank, world = self._rank_world()
        seed = self.seed if self.seed is not None else 0  # a Campaign sets it (resolve_seeds)
        if self.replay and self.replay["ratio"] > 0:
            ds = ReplayMix(ds, self._replay_frames(), round(self.replay["ratio"] * len(ds)),
                           (self.replay["seed"], seed, self.round))
        # torch's DistributedSampler: seeded per-epoch shuffle, padded by wrap-around so every rank
        # gets the same count (unequal step counts would hang DDP's gradient all-reduce)
        sampler = MixSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed * 1_000_003 + self.round * 10_007)
        return self._loader(ds, sampler, self.batch_size)

    def _replay_frames(self) -> GraphDataset:
        """The replay set as graphs, each frame's loss terms weighted ``replay["weight"]``."""
        f = open_structures(self.replay["replay"])
        weight = self.replay["weight"]

        def weighted(i: int):
            atoms = f[i]
            atoms.info[K.REPLAY_WEIGHT] = weight
            return -1_000_000 - i, atoms

        return self._graphs(weighted, len(f), self.replay.get("head"))

    def split_dataset(self, split: str) -> GraphDataset:
        """A split's graphs; ``test_foundation`` (replay's) on the replay head."""
        f = self.structure_file(split)
        head = self.replay.get("head") if self.replay and split == "test_foundation" else None
        return self._graphs(lambda i: (i, f[i]), len(f), head)

    def _eval_loader(self, split: str) -> DataLoader:
        ds = self.split_dataset(split)
        rank, world = self._rank_world()
        # batches no larger than n / W: every rank gets one when n >= W (Lightning refuses a rank with none)
        size = min(self.eval_batch_size, max(1, -(-len(ds) // world)))
        return self.batch_loader(ds, ShardBatches(range(len(ds)), size, rank, world))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> List[DataLoader]:
        return [self._eval_loader(s) for s in self.test_splits]

    def pool_dataset(self) -> GraphDataset:
        """Pool graphs *without* labels (labels stay hidden until acquired); item i = pool id i."""
        f = self.structure_file("pool")

        def unlabeled(i: int):
            atoms = f.raw(i)
            atoms.calc = None
            for key in (f.energy_key, K.REF_ENERGY):
                atoms.info.pop(key, None)
            for key in (f.forces_key, K.REF_FORCES):
                atoms.arrays.pop(key, None)
            return i, atoms

        return self._graphs(unlabeled, len(f))

    def batch_loader(self, dataset, batches: List[List[int]]) -> DataLoader:
        """Loader yielding exactly the given index batches of ``dataset``, in order."""
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)

    def pool_dataloader(self, ids: Iterable[int], batch_size: Optional[int] = None) -> DataLoader:
        """Loader over the given pool ids, in the given order (the caller shards)."""
        ids = list(ids)
        return self._loader(self.pool_dataset(), ids, batch_size or self.eval_batch_size)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"round": self.round, **self.labeled.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.round = int(state["round"])
        self.labeled.load_state_dict(state)


def _entry(split: str, value: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A ``files`` entry as a dict with ``path`` (and reader options)."""
    if isinstance(value, dict):
        if "path" not in value:
            raise ValueError(f"data.files.{split} needs a 'path' (got keys {sorted(value)})")
        return dict(value)
    return {"path": str(value)}
