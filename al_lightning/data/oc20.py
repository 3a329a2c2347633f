"""OC20 S2EF reader (docs/design.md §7): chunk pairs ``N.extxyz.xz`` + ``N.txt.xz``.

Each ``.xz`` is decompressed once into the dataset cache
(``cache_root()/"oc20"/<hash of path, size, mtime>/``, atomic temp + rename); frames are
then read by byte offset. Ids are global: chunks in numeric order, frames in file order.
Line ``i`` of ``N.txt.xz`` is ``random<sid>,frame<fid>[,<reference energy>]`` for frame
``i`` of ``N.extxyz.xz``; it lands in ``info["oc20_sid"]``, ``info["oc20_fid"]`` and
``info["ref_energy"]`` (adsorption energy = E - ref_energy). Forces are the raw
calculator results: fixed atoms keep their forces (``get_forces()`` would zero them).
"""

from __future__ import annotations

import fcntl
import hashlib
import io as _io
import lzma
import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from ase import Atoms

from al_lightning.data.io import DataError, extxyz_index, extxyz_offsets, normalise
from al_lightning.data.source import StructureSource

XYZ_SUFFIX = ".extxyz.xz"
TXT_SUFFIX = ".txt.xz"
SID, FID, REF = "oc20_sid", "oc20_fid", "ref_energy"
_CHUNK_CACHE = 8  # chunks whose offsets + metadata stay in memory (LRU)


def _source_key(src: Path) -> str:
    st = src.stat()
    return hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def oc20_cache_dir(src: Path) -> Path:
    """Cache folder of one source file: ``cache_root()/"oc20"/<hash of path+size+mtime>``."""
    from al_lightning.data.cache import cache_root

    return cache_root() / "oc20" / _source_key(src)


def _atomic_build(target: Path, build) -> Path:
    """Run ``build(tmp_path)`` once under a file lock, then rename ``tmp`` to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return target
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other ranks wait here, then reuse the result
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            try:
                build(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target


def decompress_cached(src: Path) -> Path:
    """Plain copy of ``src`` (``*.xz``) in the cache, decompressed on first use only."""
    src = Path(src)

    def build(tmp: Path) -> None:
        try:
            with lzma.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except (lzma.LZMAError, EOFError) as exc:
            raise DataError(f"{src}: corrupt .xz ({exc})") from None

    return _atomic_build(oc20_cache_dir(src) / src.name[: -len(".xz")], build)


def parse_txt_line(line: str, where: str) -> Tuple[int, int, float]:
    """``random<sid>,frame<fid>[,<ref energy>]`` -> (sid, fid, ref or NaN)."""
    parts = [p.strip() for p in line.strip().split(",")]
    try:
        if len(parts) not in (2, 3) or not parts[1].startswith("frame"):
            raise ValueError
        sid = int(parts[0][len("random"):] if parts[0].startswith("random") else parts[0])
        fid = int(parts[1][len("frame"):])
        ref = float(parts[2]) if len(parts) == 3 else float("nan")
    except ValueError:
        got = line.strip()[:60]
        raise DataError(f"{where}: expected 'random<sid>,frame<fid>[,<ref energy>]', got {got!r}") from None
    return sid, fid, ref


def read_txt_meta(txt: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Parsed ``N.txt.xz``: (n, 2) int64 [sid, fid] and (n,) float64 ref (NaN if absent).

    Parsed once; the arrays are cached as ``.npz`` beside the decompressed chunk.
    """
    txt = Path(txt)

    def build(tmp: Path) -> None:
        try:
            with lzma.open(txt, "rt") as fh:
                text = fh.read()
        except (lzma.LZMAError, EOFError, UnicodeDecodeError) as exc:
            raise DataError(f"{txt}: corrupt .xz ({exc})") from None
        if not text.strip():
            raise DataError(f"{txt}: empty metadata file")
        rows = [parse_txt_line(line, f"{txt}: line {k + 1}") for k, line in enumerate(text.rstrip("\n").split("\n"))]
        with open(tmp, "wb") as fh:
            np.savez(fh, ids=np.asarray([r[:2] for r in rows], dtype=np.int64),
                     ref=np.asarray([r[2] for r in rows], dtype=np.float64))

    with np.load(_atomic_build(oc20_cache_dir(txt) / (txt.name[: -len(".xz")] + ".npz"), build)) as z:
        return z["ids"], z["ref"]


def _chunk_sort_key(path: Path) -> Tuple[int, int, str]:
    stem = path.name[: -len(XYZ_SUFFIX)]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def find_chunks(path: Union[str, Path, Sequence[Union[str, Path]]]) -> List[Path]:
    """``N.extxyz.xz`` files of a split (a folder, one file or a list), in numeric order."""
    items = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    chunks: List[Path] = []
    for p in items:
        if p.is_dir():
            chunks += [c for c in p.iterdir() if c.name.endswith(XYZ_SUFFIX)]
        elif p.name.endswith(XYZ_SUFFIX) and p.exists():
            chunks.append(p)
        else:
            raise DataError(f"{p}: not found, or neither a folder nor a '*{XYZ_SUFFIX}' file")
    if not chunks:
        raise DataError(f"{items[0]}: no '*{XYZ_SUFFIX}' chunks")
    return sorted(set(chunks), key=_chunk_sort_key)


def txt_companion(xyz: Path) -> Path:
    """``N.txt.xz`` beside ``N.extxyz.xz``; DataError when missing."""
    txt = xyz.with_name(xyz.name[: -len(XYZ_SUFFIX)] + TXT_SUFFIX)
    if not txt.exists():
        raise DataError(f"{xyz}: missing metadata companion {txt.name}")
    return txt


def _read_frame(path: Path, offset: int) -> Atoms:
    from ase.io import read

    with open(path, "rb") as f:
        f.seek(offset)
        n = int(f.readline().split()[0])
        text = f"{n}\n" + b"".join(f.readline() for _ in range(n + 1)).decode()
    return read(_io.StringIO(text), format="extxyz", index=0)


class OC20S2EF(StructureSource):
    """Indexed random access to an OC20 S2EF split (same protocol as ``StructureFile``).

    ``len(f)``, ``f.raw(i)`` (Atoms as stored: tags, FixAtoms from ``move_mask``, calculator
    with energy/forces), ``f[i]`` (normalised), ``iter(f)``. ``path`` is the split as given;
    ``chunks`` its ``N.extxyz.xz`` files. Opening decompresses each chunk (first time only),
    indexes it and checks that the txt line count equals the frame count.
    """

    format = "oc20"
    default_energy_key, default_forces_key = "energy", "forces"  # calculator fields

    @classmethod
    def detect(cls, path) -> bool:
        """A ``*.extxyz.xz`` file, a folder holding some, or a list of those."""
        if isinstance(path, (list, tuple)):
            return bool(path) and all(str(p).endswith(XYZ_SUFFIX) or Path(p).is_dir() for p in path)
        p = Path(path)
        return p.name.endswith(XYZ_SUFFIX) or (p.is_dir() and any(c.name.endswith(XYZ_SUFFIX) for c in p.iterdir()))

    def __init__(self, path: Union[str, Path, Sequence[Union[str, Path]]], energy_key: str = "energy",
                 forces_key: str = "forces", require_labels: bool = True,
                 elements: Optional[Sequence[int]] = None) -> None:
        self.path = [Path(p) for p in path] if isinstance(path, (list, tuple)) else Path(path)
        self.energy_key, self.forces_key = energy_key, forces_key
        self.require_labels, self.elements = require_labels, elements
        self.chunks = find_chunks(path)
        self._txts = [txt_companion(c) for c in self.chunks]  # all companions checked up front
        counts = [self._open_chunk(k)[0].shape[0] for k in range(len(self.chunks))]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._loaded: "OrderedDict[int, Tuple[np.ndarray, np.ndarray, np.ndarray, Path]]" = OrderedDict()

    def _open_chunk(self, k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
        """(offsets, ids, ref, plain path) of chunk ``k``; checks the txt/frame counts."""
        src, txt = self.chunks[k], self._txts[k]
        plain = decompress_cached(src)
        try:
            offsets = extxyz_offsets(plain)
        except DataError as exc:  # name the source, not the cache copy
            raise DataError(str(exc).replace(str(plain), str(src))) from None
        ids, ref = read_txt_meta(txt)
        if len(ids) != len(offsets):
            raise DataError(f"{txt}: {len(ids)} lines but {src.name} has {len(offsets)} frames")
        return offsets, ids, ref, plain

    def _chunk(self, k: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
        if k in self._loaded:
            self._loaded.move_to_end(k)
        else:
            self._loaded[k] = self._open_chunk(k)
            if len(self._loaded) > _CHUNK_CACHE:
                self._loaded.popitem(last=False)
        return self._loaded[k]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def atom_counts(self) -> np.ndarray:
        """Atoms per frame from each chunk's byte-offset index (no frame is parsed)."""
        return np.concatenate([extxyz_index(self._chunk(k)[3])[:, 1] for k in range(len(self.chunks))])

    def locate(self, i: int) -> Tuple[int, int]:
        """Global id -> (chunk index, frame within the chunk)."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: record {i} out of range (0..{len(self) - 1})")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, int(i - self._starts[k])

    def raw(self, i: int) -> Atoms:
        """Frame ``i`` as stored, plus ``oc20_sid``/``oc20_fid``/``ref_energy`` in ``info``."""
        k, j = self.locate(i)
        offsets, ids, ref, plain = self._chunk(k)
        try:
            atoms = _read_frame(plain, int(offsets[j]))
        except Exception as exc:  # ASE raises many types for malformed frames
            raise DataError(f"{self.chunks[k]}: record {j}: unreadable ({type(exc).__name__}: {exc})") from None
        atoms.info[SID], atoms.info[FID] = int(ids[j, 0]), int(ids[j, 1])
        if np.isfinite(ref[j]):
            atoms.info[REF] = float(ref[j])
        return atoms

    def __getitem__(self, i: int) -> Atoms:
        k, j = self.locate(i)
        return normalise(self.raw(i), f"{self.chunks[k]}: record {j}", self.energy_key, self.forces_key,
                         self.require_labels, self.require_labels, self.elements)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_loaded"] = OrderedDict()  # workers reload what they touch
        return state
