"""One writer per campaign directory: an exclusive kernel lock on ``<campaign_dir>/.lock``.

``fcntl.flock`` (non-blocking) is held for the whole run by rank 0; the operating system
drops it when the process ends in any way (kill -9 included), so there are no stale locks to
clean up. The file records the holder's pid and host for the refusal message; it is never
replaced or deleted (a new inode would be a second, unrelated lock). Local filesystems and
NFSv4 honour the lock across processes (NFS: across clients too, where the server supports
locks); filesystems mounted with ``local_lock=flock`` or without lock support do not.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"


class CampaignLocked(ValueError):
    """Another process holds the campaign directory (exit status 2)."""


def _holder_text(path: Path) -> str:
    """``pid N on host H`` from the lock file (``unknown`` parts when it cannot be read)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    return f"pid {info.get('pid', 'unknown')} on host {info.get('host', 'unknown')}"


def _message(directory: Path, path: Path) -> str:
    return (f"{directory} is in use by {_holder_text(path)} (lock {path}); "
            "wait for it to finish or use another campaign_dir")


class CampaignLock:
    """``acquire()`` takes the lock or raises :class:`CampaignLocked`; ``release()`` drops it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "CampaignLock":
        """Create the folder if needed, lock ``.lock`` (non-blocking) and record pid and host."""
        if self.held:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CampaignLocked(_message(self.directory, self.path)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "CampaignLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def busy(directory: Path) -> Optional[str]:
    """The refusal a run would get if ``directory`` is locked by another process (None: free).

    Creates nothing (a dry run's check): probes with a shared lock that it drops at once.
    """
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _message(Path(directory), path)
    finally:
        os.close(fd)
    return None
