"""Content hashes for a campaign's fingerprint and its label files (docs/design.md §8).

:func:`file_sha256` streams a data file through sha256 once: the digest is cached (in memory
and in ``<cache root>/sha256.json``) under the file's path, size, mtime, ctime and inode, so a
rewrite in place (same path, size and even a restored mtime still change the ctime) is
hashed again. :func:`structure_hash` identifies one structure (atomic numbers, positions
rounded to 1e-6 Å, cell, pbc) so that a stored label can be checked against its pool id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

CHUNK = 1 << 20
_memo: Dict[str, Tuple[List[int], str]] = {}


def _cache_path() -> Path:
    from al_lightning.data.cache import cache_root

    return cache_root() / "sha256.json"


def _stat_key(path: Path) -> List[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_cache() -> Dict[str, list]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: str, key: List[int], digest: str) -> None:
    """Add one entry (best effort: a lost race or a read-only cache only costs a rehash)."""
    from al_lightning.atomic import atomic_write

    data = _read_cache()
    data[path] = [key, digest]
    try:
        atomic_write(_cache_path(), lambda fh: json.dump(data, fh, indent=0))
    except OSError:
        pass


def stream_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: "str | Path") -> str:
    """Content sha256 of ``path``, from the cache when path, size, mtime, ctime and inode match."""
    path = Path(path).expanduser().resolve()
    name, key = str(path), _stat_key(path)
    for entry in (_memo.get(name), _read_cache().get(name)):
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and list(entry[0]) == key:
            _memo[name] = (key, entry[1])
            return entry[1]
    digest = stream_sha256(path)
    if _stat_key(path) == key:  # not rewritten while it was read
        _memo[name] = (key, digest)
        _write_cache(name, key, digest)
    return digest


def structure_hash(atoms) -> str:
    """``sha256:<hex>`` of atomic numbers, positions (rounded to 1e-6 Å), cell and pbc."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for arr in (atoms.positions, np.asarray(atoms.cell)):
        h.update(np.rint(np.asarray(arr, dtype=np.float64) * 1e6).astype(np.int64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return "sha256:" + h.hexdigest()

