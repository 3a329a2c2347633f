"""Import a user's class or object by its import path (below every subpackage: no upward imports)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str, what: str = "oracle", example: str = "ase.calculators.emt.EMT") -> Any:
    """``"package.module.Name"`` → the object; ValueError (one line, naming ``what``) when it does not exist."""
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"{what} {path!r}: expected an import path like '{example}'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{what} {path!r}: cannot import ({exc})") from None
