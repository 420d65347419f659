"""Operators (the paper's Table 1), loss inputs, and the registry users extend.

A user adds operators by defining `Primitive`s in their own module and naming them as
`package.module:NAME` (a Primitive or a list of them), e.g. `--operators mypkg.ops:Cube`.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Union

from gp_losses.core.errors import OperatorError
from gp_losses.core.registry import Registry
from primitives.base import EPS, Primitive, Terminal
from primitives.opset import OperatorSet, check_primitive
from primitives.table1 import TABLE1
from primitives.terminals import (BOX_INPUTS, CLASSIFICATION_INPUTS, ONE, TERMINALS, Y, YHAT,
                                  YHAT_REAL, E, I, U, terminals_by_name)

OPERATORS: Registry[Primitive] = Registry("operator")
for _prim in TABLE1:
    OPERATORS.register(_prim.name, _prim)

__all__ = [
    "EPS", "Primitive", "Terminal", "OperatorSet", "check_primitive", "TABLE1", "OPERATORS",
    "resolve_operators", "operator_set", "YHAT", "YHAT_REAL", "Y", "ONE", "I", "U", "E",
    "CLASSIFICATION_INPUTS", "BOX_INPUTS", "TERMINALS", "terminals_by_name",
]


def resolve_operators(specs: Iterable[Union[str, Primitive]]) -> List[Primitive]:
    """Primitives for built-in names, `package.module:NAME` paths or Primitive objects.

    A path may name one Primitive or a list/tuple of them.
    """
    out: List[Primitive] = []
    for spec in specs:
        obj = OPERATORS.get(spec) if isinstance(spec, str) else spec
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        for item in items:
            if not isinstance(item, Primitive):
                raise OperatorError(
                    f"operator {spec!r}: expected a primitives.Primitive or a list of them, "
                    f"got {type(item).__name__}")
            out.append(item)
    return out


def operator_set(extra: Sequence[Union[str, Primitive]] = ()) -> OperatorSet:
    """Table 1 plus the `extra` operators (checked on random tensors before use)."""
    return OperatorSet(list(TABLE1) + resolve_operators(extra), checked=TABLE1)
