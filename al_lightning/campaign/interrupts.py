"""Stops that tell the truth (docs/design.md §8): a campaign ended by a signal or a SystemExit
ends the process with a non-zero status, after the last safe write, and the same command resumes.

:func:`handling` (held by ``Campaign.run``) turns SIGTERM, SIGINT and SIGUSR1 into
:class:`Stopped` with status 128 + signal number; Lightning calls it after its own SIGTERM
notifier and re-raises it after its teardown. Inside :func:`deferred` (one labels.db row and its
log line) a signal waits until the block ends. A ``SystemExit`` raised inside the campaign (an
oracle calling ``sys.exit(0)``, Lightning's ``SIGTERMException``) becomes :class:`Stopped` too:
:func:`from_system_exit`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
SYSTEM_EXIT_STATUS = 2  # a SystemExit(0) / SystemExit(None) inside a campaign
_state: Dict[str, Optional[int]] = {"depth": 0, "pending": None}


class Stopped(BaseException):
    """The campaign stopped before completing (not an ``Exception``: no oracle wrapper records it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)


def interrupted(signum: int) -> Stopped:
    name = signal.Signals(signum).name
    return Stopped(128 + signum, f"stopped by {name} after the last safe write (exit status {128 + signum}); "
                                 "rerun the same command to resume")


def from_system_exit(exc: SystemExit) -> Stopped:
    """A SystemExit raised inside the campaign: its code when a non-zero int, else status 2."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return interrupted(signal.SIGTERM)
    code = exc.code if isinstance(exc.code, int) and exc.code != 0 else SYSTEM_EXIT_STATUS
    return Stopped(code, f"stopped: SystemExit({exc.code!r}) raised inside the campaign (an oracle or a callback; "
                         f"exit status {code}); rerun the same command to resume")


def _handler(signum, frame) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    raise interrupted(signum)


@contextlib.contextmanager
def handling():
    """Install the stop handlers (main thread only) and restore the previous ones afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _state.update(depth=0, pending=None)
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.update(depth=0, pending=None)


@contextlib.contextmanager
def stops_told():
    """:func:`handling`, and a ``SystemExit`` raised inside (an oracle's ``sys.exit(0)``, Lightning's
    ``SIGTERMException``) re-raised as :class:`Stopped`: never a success."""
    try:
        with handling():
            yield
    except SystemExit as exc:
        raise from_system_exit(exc) from None


@contextlib.contextmanager
def deferred():
    """A block that a stop signal does not cut: the signal is raised when the block ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["pending"]:
        signum, _state["pending"] = _state["pending"], None
        raise interrupted(signum)


def no_slurm_requeue(kw: Dict[str, Any], campaign_dir: str) -> None:
    """Under SLURM, no Lightning auto-requeue: it would write ``hpc_ckpt_*.ckpt`` files that a later
    per-round Trainer loads (a rerun of the same command resumes instead, docs/design.md §8)."""
    from lightning.fabric.plugins.environments import ClusterEnvironment
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    plugins = list(kw.get("plugins") or []) if isinstance(kw.get("plugins"), (list, tuple)) else \
        [p for p in [kw.get("plugins")] if p is not None]
    if not SLURMEnvironment.detect() or any(isinstance(p, ClusterEnvironment) for p in plugins):
        return
    kw["plugins"] = plugins + [SLURMEnvironment(auto_requeue=False)]
    kw.setdefault("default_root_dir", campaign_dir)  # where Lightning looks for hpc_ckpt files: none there
