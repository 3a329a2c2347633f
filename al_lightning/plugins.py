"""Plug-in mechanics shared by every component (below every subpackage: no upward imports).

* :func:`import_object` — ``"package.module.Name"`` → the object, one-line errors;
* :class:`Component` — a pluggable class whose options are its ``__init__`` arguments (a stable
  ``repr`` for hashing and logs; equal when of one class with equal options);
* :func:`instantiate` — a component from a short name, an import path, ``{class_path, init_args}``
  (jsonargparse, the LightningCLI way, nested components included) or an instance.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

T = TypeVar("T")


def import_object(path: str, what: str = "oracle", example: str = "ase.calculators.emt.EMT") -> Any:
    """``"package.module.Name"`` → the object; ValueError (one line, naming ``what``) when it does not exist."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"{what} {path!r}: expected an import path like '{example}'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {path!r}: cannot import ({exc})") from None


def init_options(cls: type) -> List[str]:
    """The named ``__init__`` arguments of ``cls`` (no ``self``, ``*args`` or ``**kwargs``)."""
    return [n for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class Component:
    """A pluggable class: its options are the ``__init__`` arguments it keeps as attributes of the
    same name; ``repr`` lists them (stable across processes: pass-state keys and logs use it)."""

    def options(self) -> Dict[str, Any]:
        """{name: value} of the ``__init__`` arguments; ValueError when one is not kept as ``self.<name>``."""
        names = init_options(type(self))
        missing = [n for n in names if not hasattr(self, n)]
        if missing:
            raise ValueError(f"{type(self).__qualname__} does not keep its option(s) {missing} as attributes of the "
                             "same name; store each __init__ argument as self.<name> (its repr keys resumable state)")
        return {n: getattr(self, n) for n in names}

    def spec(self) -> Dict[str, Any]:
        """``{class_path, init_args}``: what :func:`instantiate` rebuilds this component from."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": self.options()}

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.options() == self.options()

    def __hash__(self) -> int:
        return hash(repr(self))


def full_class_path(spec: Any, names: Mapping[str, str]) -> Any:
    """``spec`` with a short name (a string, or a ``class_path``) replaced by ``{class_path: <import
    path>, …}``; anything else as given."""
    if isinstance(spec, str):
        return {"class_path": names.get(spec, spec)}
    if isinstance(spec, Mapping) and spec.get("class_path") in names:
        return {**spec, "class_path": names[spec["class_path"]]}
    return spec


def instantiate(spec: Any, base: Type[T], names: Optional[Mapping[str, str]] = None, what: str = "component") -> T:
    """``spec`` → an instance of ``base``: an instance as is; a short name of ``names`` (→ class path);
    an import path; or ``{class_path: …, init_args: {…}}``. Built by jsonargparse from ``base``'s type
    hints (so init_args that are components themselves may be given the same way); every error is one
    ValueError line naming ``what``."""
    if isinstance(spec, base):
        return spec
    names = dict(names or {})
    spec = full_class_path(spec, names)
    if not isinstance(spec, Mapping) or "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"{what} must be a short name {sorted(names)}, an import path or "
                         f"{{class_path: ..., init_args: {{...}}}}, got {spec!r}")
    try:
        cls = import_object(str(spec["class_path"]), what=what, example=f"{base.__module__}.{base.__qualname__}")
    except ValueError as exc:
        raise ValueError(f"{exc}; short names: {sorted(names)}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{what} {spec['class_path']!r} is not a {base.__qualname__} class; short names: {sorted(names)}")
    init_args = dict(spec.get("init_args") or {})
    try:
        obj = _by_type_hints(cls, base, init_args)
    except Exception:  # noqa: BLE001  an untyped or **kwargs plug-in: jsonargparse cannot build it; call it
        try:
            obj = cls(**init_args)
        except Exception as exc:  # the class's own error (or a wrong argument), in one line
            raise ValueError(f"{what} {spec['class_path']!r}: {' '.join(str(exc).split())}") from None
    if isinstance(obj, Component):
        obj.options()  # refuses a component that does not keep its options (its repr keys resumable state)
    return obj


def _by_type_hints(cls: type, base: type, init_args: Dict[str, Any]) -> Any:
    """``cls(**init_args)`` built by jsonargparse from the type hints (nested components included)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--component", type=base)
    cfg = parser.parse_object({"component": {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                             "init_args": init_args}})
    return parser.instantiate(cfg).component
