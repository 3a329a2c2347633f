"""The file hand-off oracle for clusters (docs/design.md §8): write the selection to a request
file, stop the campaign cleanly (:class:`HandoffPending`), label from the labels file on the rerun."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from ase import Atoms

from al_lightning.data.io import DataError, StructureFile, write_extxyz
from al_lightning.oracle.oracles import Oracle


class HandoffPending(Exception):
    """The file hand-off oracle wrote a request; the campaign stops cleanly until labels exist."""


class FileHandoffOracle(Oracle):
    """Cluster hand-off: write the selection to a request file, stop, resume when labels exist.

    The labels file must hold the same structures in the same order (numbers and positions
    within 1e-4 Å) with energies and forces under ``energy_key`` / ``forces_key`` (default
    ``REF_energy`` / ``REF_forces``) or as calculator results (any ASE-readable file).
    """

    name = "file"
    batch_only = True

    def __init__(self, directory: Path, round_: int, energy_key: str = "REF_energy",
                 forces_key: str = "REF_forces") -> None:
        self.request = directory / "handoff" / f"round_{round_:03d}.request.extxyz"
        self.labels = directory / "handoff" / f"round_{round_:03d}.labels.extxyz"
        self.energy_key, self.forces_key = energy_key, forces_key

    def label(self, ids: Sequence[int], structures: Sequence[Atoms]) -> List[Atoms]:
        if not self.labels.exists():
            for i, a in zip(ids, structures):
                a.info["pool_id"] = int(i)
            write_extxyz(self.request, structures)
            raise HandoffPending(f"labels needed: compute REF_energy/REF_forces for the {len(ids)} structures in "
                                 f"{self.request} and write them, same order, to {self.labels}; then rerun the same command")
        got = StructureFile(self.labels, self.energy_key, self.forces_key)
        if len(got) != len(structures):
            raise DataError(f"{self.labels}: {len(got)} structures, expected {len(structures)} (as in {self.request})")
        out = []
        for k, want in enumerate(structures):
            have = got[k]
            same = len(have) == len(want) and np.array_equal(have.numbers, want.numbers) and \
                np.allclose(have.positions, want.positions, atol=1e-4)
            if not same:
                raise DataError(f"{self.labels}: record {k}: not the requested structure (pool id {ids[k]})")
            out.append(have)
        return out


def pending_labels_problem(directory: Path, energy_key: str = "REF_energy", forces_key: str = "REF_forces"
                           ) -> "str | None":
    """For a dry run: the newest hand-off request whose labels file exists, checked as the rerun would
    check it (same structures, labels present); the problem in one line, or None."""
    requests = sorted((Path(directory) / "handoff").glob("round_*.request.extxyz"))
    if not requests:
        return None
    oracle = FileHandoffOracle(Path(directory), int(requests[-1].name[6:9]), energy_key, forces_key)
    if not oracle.labels.exists():
        return None
    want = StructureFile(oracle.request, require_labels=False)
    structures = [want.raw(i) for i in range(len(want))]
    try:
        oracle.label([int(a.info.get("pool_id", -1)) for a in structures], structures)
    except DataError as exc:
        return str(exc)
    return None
