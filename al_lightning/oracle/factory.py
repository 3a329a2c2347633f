"""Which oracle a campaign uses: ``campaign.oracle`` (+ ``oracle_kwargs``) → an :class:`Oracle`."""

from __future__ import annotations


from typing import Any, Dict, Optional, Tuple, Union

from al_lightning.oracle.handoff import FileHandoffOracle
from al_lightning.oracle.oracles import CalculatorOracle, Oracle, StoredLabelOracle
from al_lightning.plugins import import_object, instantiate


def oracle_spec(spec: Union[str, Dict[str, Any]], kwargs: Optional[Dict[str, Any]] = None
                ) -> Tuple[str, Dict[str, Any]]:
    """``campaign.oracle`` (+ ``oracle_kwargs``) → (name or import path, keyword arguments).

    ``spec``: ``"stored"``, ``"file"``, an import path, or ``{class_path: …, init_args: {…}}``
    (an ASE calculator class, or an :class:`Oracle` subclass with ``label(ids, structures)``)."""
    kwargs = dict(kwargs or {})
    if isinstance(spec, str):
        return spec, kwargs
    if not isinstance(spec, dict) or "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"campaign.oracle must be 'stored', 'file', an import path or "
                         f"{{class_path: ..., init_args: {{...}}}}, got {spec!r}")
    both = sorted(set(kwargs) & set(spec.get("init_args") or {}))
    if both:
        raise ValueError(f"campaign.oracle init_args and campaign.oracle_kwargs both set {both}: keep one")
    return str(spec["class_path"]), {**(spec.get("init_args") or {}), **kwargs}


def make_oracle(spec: Union[str, Dict[str, Any]], kwargs: Optional[Dict[str, Any]], datamodule,
                timeout_s: Optional[float] = None, handoff: Optional[Tuple] = None) -> Oracle:
    """``"stored"`` → :class:`StoredLabelOracle`; ``"file"`` → the file hand-off of round
    ``handoff[1]`` in campaign directory ``handoff[0]``; an :class:`Oracle` subclass → an instance
    of it; any other import path (an ASE calculator) → :class:`CalculatorOracle`."""
    name, kwargs = oracle_spec(spec, kwargs)
    if name == "stored":
        return StoredLabelOracle(datamodule.structure_file("pool"))
    if name == "file":
        if handoff is None:
            raise ValueError("the file hand-off oracle needs the campaign directory and round")
        return FileHandoffOracle(*handoff)
    target = import_object(name)
    if isinstance(target, type) and issubclass(target, Oracle):  # built from its type hints, as strategies are
        return instantiate({"class_path": name, "init_args": kwargs}, Oracle, what="campaign.oracle")
    return CalculatorOracle(name, kwargs, timeout_s=timeout_s)
