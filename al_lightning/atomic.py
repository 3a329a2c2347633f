"""One atomic-write primitive: temp file in the same folder + flush + fsync + rename.

A reader never sees a half-written file, and a kill at any moment leaves either the old
file or the new one (the campaign's "never lose a label" rests on this).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: "str | Path", write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file next to ``path``, fsync it, then rename onto ``path``. An
    OSError (a full disk, a read-only folder) is raised naming ``path``; no temp file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename is not None and exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
