"""An operator set: validated primitives plus one DEAP `PrimitiveSet` per branch inputs.

Building a set probes every operator on random tensors (shape kept, finite output, finite
gradient), so that a bad user operator fails at start-up with its name in the message.
"""

from __future__ import annotations

import keyword
from typing import Dict, Iterable, Sequence, Tuple

import torch
from deap import gp

from gp_losses.core.errors import OperatorError
from primitives.base import Primitive, Terminal

_PROBE_SHAPE = (2, 3, 5, 5)


def check_primitive(prim: Primitive) -> None:
    """Raise OperatorError unless `prim` is well formed and behaves on random tensors."""
    if not isinstance(prim, Primitive):
        raise OperatorError(f"{prim!r} is not a primitives.Primitive")
    where = f"operator {prim.name!r}"
    if not prim.name.isidentifier() or keyword.iskeyword(prim.name):
        raise OperatorError(f"{where}: the name must be a Python identifier")
    if not isinstance(prim.arity, int) or prim.arity < 1:
        raise OperatorError(f"{where}: arity must be an integer >= 1, got {prim.arity!r}")
    gen = torch.Generator().manual_seed(0)
    inputs = [(2 * torch.randn(_PROBE_SHAPE, generator=gen)).requires_grad_()
              for _ in range(prim.arity)]
    try:
        out = prim.torch_fn(*inputs)
    except Exception as exc:
        raise OperatorError(f"{where}: raised {type(exc).__name__} on random tensors: {exc}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != _PROBE_SHAPE:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise OperatorError(f"{where}: must keep the (N, C, H, W) shape {_PROBE_SHAPE}, got {shape}")
    if not torch.isfinite(out).all():
        raise OperatorError(f"{where}: gives non-finite values on random normal inputs")
    if not out.requires_grad:
        raise OperatorError(f"{where}: its output has no gradient with respect to its inputs")
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
    for k, grad in enumerate(grads):
        if grad is None or not torch.isfinite(grad).all():
            raise OperatorError(f"{where}: gradient with respect to argument {k} is undefined or not finite")
    if prim.code:
        _check_code(prim, inputs, out, grads)
    import sympy

    try:
        expr = prim.sympy_fn(*sympy.symbols(f"x0:{prim.arity}"))
    except Exception as exc:
        raise OperatorError(f"{where}: sympy_fn raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(expr, sympy.Basic):
        raise OperatorError(f"{where}: sympy_fn must return a sympy expression, got {type(expr).__name__}")


def _check_code(prim: Primitive, inputs, out: torch.Tensor, grads) -> None:
    """OperatorError unless `prim.code` computes torch_fn's values and gradients."""
    where = f"operator {prim.name!r}"
    try:
        fn = prim.code_function()
        again = [x.detach().clone().requires_grad_() for x in inputs]
        value = fn(*again)
        code_grads = torch.autograd.grad(value.sum(), again, allow_unused=True)
    except Exception as exc:
        raise OperatorError(f"{where}: its code {prim.code!r} raised {type(exc).__name__}: {exc}") from exc
    same = torch.allclose(value, out, rtol=1e-5, atol=1e-6) and all(
        (a is None and b is None) or (a is not None and b is not None and torch.allclose(a, b, rtol=1e-5, atol=1e-6))
        for a, b in zip(code_grads, grads))
    if not same:
        raise OperatorError(f"{where}: its code {prim.code!r} does not compute what its torch_fn does "
                            "on random tensors (values or gradients differ)")


class OperatorSet:
    """The operators a search samples from (uniformly), with DEAP primitive sets per branch."""

    def __init__(self, primitives: Iterable[Primitive], check: bool = True,
                 checked: Iterable[Primitive] = ()) -> None:
        """`check`: each operator is tried on random tensors first, except those in `checked`
        (Table 1's, which tests/primitives/test_table1.py checks once, not every process)."""
        self.primitives: Tuple[Primitive, ...] = tuple(primitives)
        if not self.primitives:
            raise OperatorError("an operator set needs at least one operator")
        self.by_name: Dict[str, Primitive] = {}
        self._psets: Dict[Tuple[str, ...], gp.PrimitiveSet] = {}
        trusted = {id(p) for p in checked}
        for prim in self.primitives:
            if check and id(prim) not in trusted:
                check_primitive(prim)
            if prim.name in self.by_name:
                raise OperatorError(f"operator {prim.name!r} is defined twice")
            self.by_name[prim.name] = prim

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(p.name for p in self.primitives)

    def pset(self, inputs: Sequence[Terminal]) -> gp.PrimitiveSet:
        """The DEAP primitive set of a branch with these inputs (built once per input names)."""
        key = tuple(t.name for t in inputs)
        if key not in self._psets:
            self._psets[key] = self._build_pset(tuple(inputs))
        return self._psets[key]

    def _build_pset(self, inputs: Tuple[Terminal, ...]) -> gp.PrimitiveSet:
        clash = [t.name for t in inputs if t.name in self.by_name]
        if clash:
            raise OperatorError(f"input name {clash[0]!r} is also an operator name")
        pset = gp.PrimitiveSet("_".join(t.name for t in inputs), len(inputs))
        pset.renameArguments(**{f"ARG{k}": t.name for k, t in enumerate(inputs)})
        for term in pset.terminals[object]:
            term.name = term.value  # DEAP renames the value only; keep name == str(node)
        for prim in self.primitives:
            pset.addPrimitive(prim.torch_fn, prim.arity, name=prim.name)
        return pset

    def __repr__(self) -> str:
        return f"OperatorSet({', '.join(self.names)})"
