"""Strategies by name (docs/design.md §5): ``make_strategy("pv_lcmd", **options)``.

Apart from strategies.py (the base classes), so that pv.py and committee.py can import those
without an import cycle.
"""

from __future__ import annotations

from typing import Any

from al_lightning.acquisition.committee import CommitteeStrategy
from al_lightning.acquisition.pv import PVStrategy
from al_lightning.acquisition.strategies import RandomStrategy, Strategy

STRATEGY_NAMES = ("random", "pv_topb", "pv_lcmd", "lcmd", "committee_e", "committee_f")


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """Strategy by its docs/design.md §5 name; ``kwargs`` are its options (clear errors for unknown ones)."""
    import inspect

    factories = {"random": RandomStrategy, "pv_topb": lambda **kw: PVStrategy(mode="pv_topb", **kw),
                 "pv_lcmd": lambda **kw: PVStrategy(mode="pv_lcmd", **kw),
                 "lcmd": lambda **kw: PVStrategy(mode="lcmd", **kw),
                 "committee_e": lambda **kw: CommitteeStrategy(target="energy", **kw),
                 "committee_f": lambda **kw: CommitteeStrategy(target="forces", **kw)}
    if name not in factories:
        raise ValueError(f"campaign strategy {name!r} unknown; available: {list(STRATEGY_NAMES)}")
    options = {c: set(inspect.signature(c.__init__).parameters) - {"self", "mode", "target"}
               for c in (RandomStrategy, PVStrategy, CommitteeStrategy)}
    cls = {"random": RandomStrategy, "committee_e": CommitteeStrategy, "committee_f": CommitteeStrategy}.get(name, PVStrategy)
    unknown = sorted(set(kwargs) - set().union(*options.values()))
    if unknown:
        raise ValueError(f"campaign.strategy_kwargs {unknown} not options of {name!r} (or any strategy); "
                         f"allowed: {sorted(options[cls])}")
    ignored = sorted(set(kwargs) - options[cls])
    if ignored:  # options of other strategies: a config can switch strategy on the command line
        import warnings

        warnings.warn(f"campaign.strategy_kwargs {ignored} do not apply to {name!r} and are ignored", UserWarning)
    return factories[name](**{k: v for k, v in kwargs.items() if k in options[cls]})
