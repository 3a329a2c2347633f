"""The child side of a hard oracle timeout (see timeout.py); run as a script, never imported.

``python worker.py IN_FD OUT_FD``: receives ``(calculator import path, kwargs)``, builds the
calculator, answers ``("ready",)``, then for each Atoms received answers ``("ok", energy,
forces)``, ``("error", "Type: message")`` or ``("exit", code)`` (the calculator raised
SystemExit). It imports only the standard library, numpy, ASE and the calculator's module (not
al_lightning or torch), so it starts in well under a second.
"""

import importlib
import sys
from multiprocessing.connection import Connection
from pathlib import Path


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def set_charge_spin(calc, atoms) -> None:
    """Give the calculator the structure's ``info["charge"]`` / ``info["multiplicity"]`` when its
    parameters take them (tblite's GFN2-xTB does); refuse a charged or open-shell structure
    (ValueError) for a calculator that would silently label it neutral and closed-shell."""
    params = {**(getattr(calc, "default_parameters", None) or {}), **(getattr(calc, "parameters", None) or {})}
    given = {k: int(atoms.info[k]) for k in ("charge", "multiplicity") if atoms.info.get(k) is not None}
    takes = {k: v for k, v in given.items() if k in params and hasattr(calc, "set")}
    if takes:
        calc.set(**takes)
    ignored = {k: v for k, v in given.items() if k not in takes and v != {"charge": 0, "multiplicity": 1}[k]}
    if ignored:
        raise ValueError(f"{type(calc).__name__} takes no {'/'.join(ignored)} parameter but the structure has "
                         f"{ignored}: use a calculator that does (e.g. tblite.ase.TBLite)")


def _build(calculator: str, kwargs: dict):
    module, _, name = calculator.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def _serve(inbox: Connection, outbox: Connection) -> None:
    import numpy as np

    calculator, kwargs = inbox.recv()
    try:
        calc = _build(calculator, kwargs)
    except Exception as exc:
        outbox.send(("error", _describe(exc)))
        return
    outbox.send(("ready",))
    while True:
        try:
            atoms = inbox.recv()
        except EOFError:  # the campaign closed the pipe (or ended)
            return
        try:
            set_charge_spin(calc, atoms)
            atoms.calc = calc
            energy = float(atoms.get_potential_energy())
            forces = np.array(atoms.get_forces(apply_constraint=False))
        except SystemExit as exc:
            outbox.send(("exit", exc.code))
            return
        except Exception as exc:
            outbox.send(("error", _describe(exc)))
            continue
        outbox.send(("ok", energy, forces))


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # no shadowing by this folder
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
