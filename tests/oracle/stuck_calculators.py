"""Calculators for the oracle-timeout tests, importable by the worker process (which sees the
test process's sys.path): one stuck in C code, one asleep, one that calls sys.exit(0)."""

import re
import time

from ase.calculators.emt import EMT


class BacktrackingEMT(EMT):
    """EMT, except for structures whose first atom is ``stuck_symbol``: there calculate() runs a
    catastrophically backtracking regular expression (about 2**40 steps inside ``re``'s C loop,
    which holds the GIL, so SIGALRM handlers never run)."""

    def __init__(self, stuck_symbol: str = "Cu", **kwargs):
        super().__init__(**kwargs)
        self.stuck_symbol = stuck_symbol

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if atoms is not None and atoms.get_chemical_symbols()[0] == self.stuck_symbol:
            re.match(r"(a+)+$", "a" * 40 + "b")
        super().calculate(atoms, properties, system_changes)


class SleepyEMT(EMT):
    """EMT that sleeps ``seconds`` first."""

    def __init__(self, seconds: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        time.sleep(self.seconds)
        super().calculate(atoms, properties, system_changes)


class ExitingEMT(EMT):
    """EMT whose calculate() calls ``sys.exit(0)`` (as some wrappers do on a fatal error)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise SystemExit(0)
