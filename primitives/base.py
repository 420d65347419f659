"""The two definition types of the search space: an operator and an input terminal.

A `Primitive` is the single source of truth for an operator: the DEAP primitive set, the
compiled torch loss, the sympy/LaTeX formula and the exported module all derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Tuple

import torch

if TYPE_CHECKING:  # sympy is imported where a formula is made (primitives/table1.py says why)
    import sympy

EPS = 1e-12
"""The paper's epsilon (Table 1), added in Inv, Log and Sqrt."""


@dataclass(frozen=True)
class Primitive:
    """An operator: `torch_fn` maps `arity` (N, C, H, W) tensors to one of the same shape.

    `sympy_fn` maps as many sympy expressions to one; it is used for formulas only, so it may
    drop the epsilon (as the paper's Table 8 does).

    `code` is `torch_fn` as one Python expression over the arguments `x` (and `y`, then `z`),
    using only `torch`, `F` (torch.nn.functional) and `EPS`: an exported loss writes it out, so
    that the file needs nothing but torch. The operator set checks that it computes what
    `torch_fn` does. An operator without it can be searched but not exported.
    """

    name: str
    arity: int
    torch_fn: Callable[..., torch.Tensor] = field(compare=False)
    sympy_fn: Callable[..., sympy.Expr] = field(compare=False)
    doc: str = field(default="", compare=False)
    code: str = field(default="", compare=False)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        return self.torch_fn(*args)

    @property
    def args(self) -> Tuple[str, ...]:
        """The argument names that `code` uses."""
        return code_args(self.arity)

    def code_function(self) -> Callable[..., torch.Tensor]:
        """`code` compiled into a function (what an exported loss runs)."""
        return compile_code(self.code, self.arity, self.name)


def code_args(arity: int) -> Tuple[str, ...]:
    """x, y, z for up to three arguments, else x0, x1, ..."""
    return ("x", "y", "z")[:arity] if arity <= 3 else tuple(f"x{k}" for k in range(arity))


def compile_code(code: str, arity: int, name: str = "operator") -> Callable[..., torch.Tensor]:
    """A function of `arity` tensors from an operator's `code` expression."""
    import torch.nn.functional as F

    source = f"lambda {', '.join(code_args(arity))}: {code}"
    return eval(compile(source, f"<operator {name}>", "eval"), {"torch": torch, "F": F, "EPS": EPS})


@dataclass(frozen=True)
class Terminal:
    """A loss input. `prediction`/`target` say whether it depends on the network's prediction
    and on the training target (static checks use this); `assumptions` are sympy assumptions
    used to simplify formulas (e.g. a softmax probability is positive)."""

    name: str
    prediction: bool = False
    target: bool = False
    constant: float | None = None
    assumptions: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def symbol(self) -> sympy.Expr:
        import sympy

        if self.constant is not None:
            return sympy.nsimplify(self.constant)
        return sympy.Symbol(self.name, **dict(self.assumptions))
