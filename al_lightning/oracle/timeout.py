"""A hard time limit for calculator oracles: the calculator runs in a worker process that is
killed when a label takes longer than ``timeout_s`` (docs/design.md §8).

SIGALRM cannot interrupt a calculator stuck in C code; a separate process can always be killed.
The worker is a fresh interpreter (``sys.executable worker.py``, exec'd like multiprocessing's
spawn start method: the campaign process, with its torch / gloo threads, is never forked
without exec) that sees this process's ``sys.path`` and builds the calculator itself from its
import path and keyword arguments. It is started at the first label, reused for the next ones,
restarted after a kill and closed when the round's labeling ends. The limit counts from
sending a structure; the worker's start and the calculator's construction get 60 s more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

WORKER = Path(__file__).with_name("worker.py")
START_S = 60.0


class CalculatorFailed(RuntimeError):
    """The calculator raised in the worker; the message is ``Type: message`` as raised there."""


class TimeoutWorker:
    """``compute(atoms) -> (energy, forces)`` in a worker process, killed after ``timeout_s``."""

    def __init__(self, calculator: str, kwargs: Dict[str, Any], timeout_s: float) -> None:
        self.calculator, self.kwargs, self.timeout_s = calculator, dict(kwargs), float(timeout_s)
        self.proc: Optional[subprocess.Popen] = None
        self._send: Optional[Connection] = None
        self._recv: Optional[Connection] = None

    def start(self) -> None:
        """Start the worker and wait until it has built the calculator."""
        child_in, send = os.pipe()
        recv, child_out = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        try:
            self.proc = subprocess.Popen([sys.executable, str(WORKER), str(child_in), str(child_out)],
                                         pass_fds=(child_in, child_out), env=env)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._send, self._recv = Connection(send, readable=False), Connection(recv, writable=False)
        self._send.send((self.calculator, self.kwargs))
        reply = self._wait(START_S + self.timeout_s, "to start")
        if reply[0] != "ready":
            self.close()
            raise CalculatorFailed(reply[1])

    def compute(self, atoms) -> Tuple[float, np.ndarray]:
        """Energy and raw forces of ``atoms`` (a copy without calculator is sent)."""
        if self.proc is None:
            self.start()
        work = atoms.copy()
        work.calc = None
        self._send.send(work)
        reply = self._wait(self.timeout_s, "")
        if reply[0] == "exit":
            self.close()
            raise SystemExit(reply[1])
        if reply[0] == "error":
            raise CalculatorFailed(reply[1])
        return reply[1], reply[2]

    def _wait(self, seconds: float, what: str):
        """The worker's next reply; kills it on a timeout, its death or an interrupt of this process."""
        try:
            if not self._recv.poll(seconds):
                raise TimeoutError(f"no label within {self.timeout_s:g} s (worker process killed)" if not what
                                   else f"oracle worker did not start within {seconds:g} s (killed)")
            return self._recv.recv()
        except EOFError:
            code = self.proc.wait()
            self.close()
            raise CalculatorFailed(f"oracle worker process ended (exit status {code})") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill the worker (if running) and close the pipes; the next compute() starts a new one."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self.proc = self._send = self._recv = None
