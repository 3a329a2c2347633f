"""``campaign.strategy`` the LightningCLI way (docs/design.md §5): a class by ``class_path`` /
``init_args``, or a short name (an alias a Strategy class declares in ``aliases``).

    strategy: pv_lcmd                          # alias; options in campaign.strategy_kwargs
    strategy:
      class_path: al_lightning.acquisition.PVStrategy
      init_args: {mode: pv_lcmd, rel_lambda: 1.0e-4}

The names come from the classes themselves (no second list); a user's own Strategy subclass
works by its import path. Options are checked here (aliases, the options of another built-in
strategy, unknown names), then jsonargparse builds the class from its type hints, nested
components included (``plugins.instantiate``). The campaign config stays plain data
(campaign.json, fingerprint).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type, Union

from al_lightning.acquisition.committee import CommitteeStrategy
from al_lightning.acquisition.controls import OracleStrategy, SystemSampler
from al_lightning.acquisition.pv import PVStrategy
from al_lightning.acquisition.strategies import RandomStrategy, Strategy
from al_lightning.plugins import import_object, init_options, instantiate

BUILTIN: Tuple[Type[Strategy], ...] = (RandomStrategy, PVStrategy, CommitteeStrategy, OracleStrategy, SystemSampler)
StrategySpec = Union[str, Dict[str, Any]]


def aliases() -> Dict[str, Tuple[Type[Strategy], Dict[str, Any]]]:
    """{short name: (class, the init_args it fixes)} of the built-in strategies."""
    return {name: (cls, fixed) for cls in BUILTIN for name, fixed in cls.aliases.items()}


def strategy_names() -> List[str]:
    return list(aliases())


def _import_class(path: str) -> Type[Strategy]:
    try:
        cls = import_object(str(path), what="campaign.strategy class_path", example="al_lightning.acquisition.PVStrategy")
    except ValueError as exc:
        raise ValueError(f"{exc}; short names: {strategy_names()}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"campaign.strategy class_path {path!r} is not a Strategy class "
                         f"(e.g. al_lightning.acquisition.PVStrategy); short names: {strategy_names()}")
    return cls


def resolve(spec: StrategySpec) -> Tuple[Type[Strategy], Dict[str, Any], str]:
    """(class, init_args, label) of a short name or a ``{class_path, init_args}`` mapping."""
    if isinstance(spec, str):
        table = aliases()
        if spec in table:
            return table[spec][0], dict(table[spec][1]), spec
        if "." in spec:
            return _import_class(spec), {}, spec
        raise ValueError(f"campaign strategy {spec!r} unknown; available: {strategy_names()} "
                         "or {class_path: ..., init_args: {...}}")
    if not isinstance(spec, dict) or "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"campaign.strategy must be a short name or {{class_path: ..., init_args: {{...}}}}, "
                         f"got {spec!r}")
    cls = _import_class(spec["class_path"])
    init = dict(spec.get("init_args") or {})
    return cls, init, strategy_label(spec)


def strategy_label(spec: StrategySpec) -> str:
    """A short label for reports: the alias, or ``ClassName`` (+ ``:mode`` / ``:target``)."""
    if isinstance(spec, str):
        return spec
    init = spec.get("init_args") or {}
    name = str(spec.get("class_path", "?")).rpartition(".")[2]
    extra = init.get("mode") or init.get("target")
    return f"{name}:{extra}" if extra else name


def _options(cls: Type[Strategy]) -> List[str]:
    return init_options(cls) + list(cls.shorthands)


def build_strategy(spec: StrategySpec, options: Optional[Dict[str, Any]] = None) -> Strategy:
    """The strategy object; ``options`` (``campaign.strategy_kwargs``) add to / override init_args.

    Options of another built-in strategy are ignored with a warning (a config can switch
    strategy on the command line); unknown arguments are refused in one line naming the
    allowed ones."""
    cls, init, label = resolve(spec)
    options = dict(options or {})
    fixed = aliases().get(spec, (None, {}))[1] if isinstance(spec, str) else {}
    clash = sorted(k for k in options if k in fixed and options[k] != fixed[k])
    if clash:
        raise ValueError(f"campaign.strategy_kwargs {clash} contradict strategy {label!r} "
                         f"(it fixes {fixed}); use the class_path form to set them")
    args = {**init, **options}
    allowed = _options(cls)
    foreign = set(options) - set(allowed)
    if foreign and foreign <= {n for other in BUILTIN for n in _options(other)}:
        import warnings

        warnings.warn(f"campaign.strategy_kwargs {sorted(foreign)} do not apply to {label!r} and are ignored",
                      UserWarning)
        args = {k: v for k, v in args.items() if k not in foreign}
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(f"campaign.strategy_kwargs {unknown} are not options of {label!r} "
                         f"({cls.__module__}.{cls.__qualname__}); allowed: {sorted(set(allowed) - set(fixed))}")
    return instantiate({"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": cls.translate(args)},
                       Strategy, what=f"campaign.strategy {label!r}")
