"""Up-front checks of every pool record (docs/design.md §7): finite positions and cell, a sane
atom count and, for a stored-label pool, present and finite labels. The result is cached by the
file's content hash, so an unchanged pool is checked once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from al_lightning.data.io import DataError, normalise

MAX_ATOMS = 100_000


def record_problem(reader, i: int, labels: bool) -> Optional[str]:
    """What is wrong with record ``i`` (None when it is fine)."""
    try:
        atoms = reader.raw(i)
    except Exception as exc:  # ASE raises many types for a damaged record
        return f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not 1 <= len(atoms) <= MAX_ATOMS:
        return f"{len(atoms)} atoms"
    if not np.all(np.isfinite(atoms.positions)):
        return "positions contain NaN/inf"
    if not np.all(np.isfinite(np.asarray(atoms.cell))):
        return "cell contains NaN/inf"
    if labels:
        try:
            normalise(atoms, "", reader.energy_key, reader.forces_key, True, getattr(reader, "has_forces", True))
        except DataError as exc:
            return str(exc).removeprefix(": ")
    return None


def bad_records(reader, labels: bool, cache: Optional[Path] = None) -> Dict[int, str]:
    """{record index: what is wrong} over every record of ``reader``; read from / written to
    ``cache`` (a JSON file named by the file's content hash) when given."""
    if cache is not None and cache.exists():
        return {int(k): v for k, v in json.loads(cache.read_text()).items()}
    bad = {i: why for i in range(len(reader)) if (why := record_problem(reader, i, labels))}
    if cache is not None:
        from al_lightning.atomic import atomic_write

        atomic_write(cache, lambda fh: json.dump({str(k): v for k, v in bad.items()}, fh))
    return bad


def bad_records_line(path, bad: Dict[int, str], shown: int = 3) -> str:
    """One line naming the file, the first few bad records and how to go on."""
    first = "; ".join(f"record {i}: {why}" for i, why in sorted(bad.items())[:shown])
    more = f" (and {len(bad) - shown} more)" if len(bad) > shown else ""
    return (f"{path}: {len(bad)} bad pool record(s): {first}{more}; fix the file, or set data.skip_bad_records: "
            "true to leave them out of every acquisition")
