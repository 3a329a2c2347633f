"""Parameter subsets S for NTK features: the e3nn ``o3.Linear`` weights that get
per-structure gradients.

A subset is chosen by name patterns (``fnmatch`` on ``model.named_parameters()`` names,
``*`` also crosses dots) or by a preset name:

- ``"readouts"`` (default): ``readouts.*``
- ``"readouts+products"``: also ``products.*.linear.weight``
- ``"readouts+last_interaction"``: also every ``o3.Linear`` weight of the last
  interaction block (``linear_up``, ``linear``) and of the last product block.
- ``"interactions"``: readouts, every product block's linear and every interaction block's
  ``linear_up`` and ``linear``.
- ``"all_linear"``: every ``o3.Linear`` weight of the model (also the node embedding): the
  largest subset the perturbation trick reaches. The rest of a MACE (radial MLPs, skip and
  convolution tensor products, symmetric contractions) has no per-structure gradient here.

The feature vector of a structure is the concatenation, in ``named_parameters`` order, of
the gradients of each selected weight *in e3nn's flat weight layout*, so feature column
``target.offset + j`` is ∂L/∂``param.flatten()[j]``.

Only ``o3.Linear`` weights are supported (MACE readouts, product and interaction
linears): the per-graph perturbation is evaluated by linearity per instruction block.
A pattern that matches anything else (radial MLPs, symmetric contractions, tensor
products, biases) raises ``ValueError`` unless ``strict=False``, which skips and
records it in ``ParamSubset.skipped``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import torch

import al_lightning  # noqa: F401  (mace before e3nn.o3)
from e3nn import o3

PRESETS: Dict[str, Tuple[str, ...]] = {
    "readouts": ("readouts.*",),
    "readouts+products": ("readouts.*", "products.*.linear.weight"),
    "readouts+last_interaction": ("readouts.*", "{last_interaction}"),
    "interactions": ("readouts.*", "products.*.linear.weight", "interactions.*.linear_up.weight",
                     "interactions.*.linear.weight"),
    "all_linear": ("{all_linear}",),
}


@dataclass(frozen=True)
class LinearBlock:
    """One weight instruction of an ``o3.Linear``: out[w, i] += pw · Σ_u W[u, w] x[u, i].

    ``in_start:in_stop`` / ``out_start:out_stop`` slice the feature dimension; the block's
    weights are ``weight[w_offset : w_offset + mul_in * mul_out]`` viewed (mul_in, mul_out).
    """

    in_start: int
    in_stop: int
    out_start: int
    out_stop: int
    mul_in: int
    mul_out: int
    ir_dim: int
    path_weight: float
    w_offset: int

    @property
    def numel(self) -> int:
        return self.mul_in * self.mul_out


@dataclass(frozen=True)
class LinearTarget:
    """A selected ``o3.Linear`` weight: its module, instruction blocks and feature offset."""

    name: str
    module: o3.Linear
    blocks: Tuple[LinearBlock, ...]
    numel: int
    offset: int
    out_dim: int
    out_slices: Tuple[Tuple[int, int], ...]


@dataclass(frozen=True)
class ParamSubset:
    """The resolved subset: targets in feature order, total p, skipped names."""

    targets: Tuple[LinearTarget, ...]
    p: int
    skipped: Tuple[str, ...] = ()

    def report(self) -> Dict[str, int]:
        """p per selected layer (parameter name -> number of features), in feature order."""
        return {t.name: t.numel for t in self.targets}


def linear_blocks(lin: o3.Linear) -> Tuple[LinearBlock, ...]:
    """Instruction blocks of an ``o3.Linear`` in its flat weight order (biases excluded)."""
    in_sl, out_sl = lin.irreps_in.slices(), lin.irreps_out.slices()
    blocks, off = [], 0
    for ins in lin.instructions:
        if ins.i_in == -1 or 0 in ins.path_shape:
            continue
        mul_in, mul_out = ins.path_shape
        ir_dim = lin.irreps_in[ins.i_in].ir.dim
        blocks.append(LinearBlock(in_sl[ins.i_in].start, in_sl[ins.i_in].stop,
                                  out_sl[ins.i_out].start, out_sl[ins.i_out].stop,
                                  mul_in, mul_out, ir_dim, float(ins.path_weight), off))
        off += mul_in * mul_out
    return tuple(blocks)


def _expand(model: torch.nn.Module, patterns: Sequence[str]) -> Tuple[str, ...]:
    """Presets, ``{last_interaction}`` and ``{all_linear}`` -> plain fnmatch patterns."""
    out = []
    for pat in patterns:
        if pat in PRESETS:
            out.extend(_expand(model, PRESETS[pat]))
        elif pat == "{last_interaction}":
            last = len(model.interactions) - 1  # type: ignore[arg-type]
            out += [f"interactions.{last}.linear_up.weight", f"interactions.{last}.linear.weight",
                    f"products.{last}.linear.weight"]
        elif pat == "{all_linear}":
            out += [f"{name}.weight" for name, mod in model.named_modules()
                    if isinstance(mod, o3.Linear) and mod.internal_weights and mod.weight.numel()]
        else:
            out.append(pat)
    return tuple(out)


def resolve_params(
    model: torch.nn.Module,
    params: Union[str, Sequence[str], ParamSubset, None] = "readouts",
    strict: bool = True,
) -> ParamSubset:
    """Resolve names / patterns / a preset to a ``ParamSubset`` of ``o3.Linear`` weights.

    Raises ``ValueError`` when nothing matches, or (``strict``) when a matched parameter is
    not the ``weight`` of an ``o3.Linear`` with shared internal weights.
    """
    if isinstance(params, ParamSubset):
        return params
    pats = _expand(model, (params,) if isinstance(params, str) else tuple(params or ("readouts",)))
    modules = dict(model.named_modules())
    targets, skipped, offset = [], [], 0
    for name, _ in model.named_parameters():
        if not any(fnmatch.fnmatchcase(name, p) for p in pats):
            continue
        mod_name, _, attr = name.rpartition(".")
        mod = modules.get(mod_name)
        ok = isinstance(mod, o3.Linear) and attr == "weight" and mod.internal_weights
        if not ok or mod.weight.dim() != 1:
            skipped.append(name)
            continue
        blocks = linear_blocks(mod)
        n = sum(b.numel for b in blocks)
        sl = tuple((s.start, s.stop) for s in mod.irreps_out.slices())
        targets.append(LinearTarget(name, mod, blocks, n, offset, mod.irreps_out.dim, sl))
        offset += n
    if skipped and strict:
        raise ValueError(f"only o3.Linear weights are supported; pattern(s) {pats} also matched "
                         f"{skipped} (pass strict=False to skip them)")
    if not targets:
        raise ValueError(f"no o3.Linear weight matches {pats}")
    return ParamSubset(tuple(targets), offset, tuple(skipped))
