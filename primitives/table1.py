"""The 14 operators of the paper's Table 1, epsilon = 1e-12, each keeping (N, C, H, W) shape.

Aggregation operators replace each element with the aggregate it belongs to (broadcast back).
Max/Min-Pooling are 3x3, stride 1, padding 1; padded cells never win (torch pads with -inf).
Formulas omit epsilon, as the paper's Table 8 does.
"""

from __future__ import annotations

import functools
from typing import Any, Dict

from primitives.base import Primitive, compile_code

# sympy is imported on first use (a formula), not with the operators: a sandbox or a worker
# that only trains never needs it, and it is a third of their start-up.


def _sympy() -> Any:
    import sympy

    return sympy


@functools.lru_cache(maxsize=None)
def aggregations() -> Dict[str, Any]:
    """The sympy functions of the aggregation operators (made at first use): `Aggregation`, the
    base, and one subclass per operator, named as LaTeX prints them (\\operatorname{Mean}_{nhw},
    \\operatorname{MaxPool}, ...)."""
    sympy = _sympy()

    class Aggregation(sympy.Function):
        """A Table 1 aggregation in a formula; over a constant it is that constant."""

        nargs = 1

        @classmethod
        def eval(cls, x):
            if x.is_number:
                return x
            return None

        # an aggregate keeps the sign of what it aggregates (lets sympy drop sign() and |.|)
        def _eval_is_real(self):
            return self.args[0].is_real

        def _eval_is_positive(self):
            return self.args[0].is_positive

        def _eval_is_nonnegative(self):
            return self.args[0].is_nonnegative

        def _eval_is_negative(self):
            return self.args[0].is_negative

        def _eval_is_nonpositive(self):
            return self.args[0].is_nonpositive

    made = {"Aggregation": Aggregation}
    for name in ("Mean_nhw", "Mean_c", "MaxPool", "MinPool"):
        made[name] = type(name, (Aggregation,), {"__module__": __name__})
    return made


def __getattr__(name: str) -> Any:  # `from primitives.table1 import Aggregation` still works
    if name in ("Aggregation", "Mean_nhw", "Mean_c", "MaxPool", "MinPool"):
        return aggregations()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _aggregate(name: str):
    return lambda a: aggregations()[name](a)


def _op(name: str, arity: int, sympy_fn, doc: str, code: str) -> Primitive:
    """A Table 1 operator whose torch function is its `code`: the search and an exported loss
    run the same expression."""
    return Primitive(name, arity, compile_code(code, arity, name), sympy_fn, doc, code)


TABLE1 = (
    _op("Add", 2, lambda a, b: a + b, "x + y", "x + y"),
    _op("Mul", 2, lambda a, b: a * b, "x * y", "x * y"),
    _op("Neg", 1, lambda a: -a, "-x", "-x"),
    _op("Abs", 1, lambda a: _sympy().Abs(a), "|x|", "torch.abs(x)"),
    _op("Inv", 1, lambda a: 1 / a, "1 / (x + eps)", "torch.reciprocal(x + EPS)"),
    _op("Log", 1, lambda a: _sympy().sign(a) * _sympy().log(_sympy().Abs(a)), "sign(x) * log(|x| + eps)",
        "torch.sign(x) * torch.log(torch.abs(x) + EPS)"),
    _op("Exp", 1, lambda a: _sympy().exp(a), "e^x", "torch.exp(x)"),
    _op("Tanh", 1, lambda a: _sympy().tanh(a), "tanh(x)", "torch.tanh(x)"),
    _op("Square", 1, lambda a: a ** 2, "x^2", "torch.square(x)"),
    _op("Sqrt", 1, lambda a: _sympy().sign(a) * _sympy().sqrt(_sympy().Abs(a)), "sign(x) * sqrt(|x| + eps)",
        "torch.sign(x) * torch.sqrt(torch.abs(x) + EPS)"),
    _op("MeanNHW", 1, _aggregate("Mean_nhw"), "mean over N, H, W, broadcast back",
        "x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x)"),
    _op("MeanC", 1, _aggregate("Mean_c"), "mean over C, broadcast back", "x.mean(dim=1, keepdim=True).expand_as(x)"),
    _op("MaxPool", 1, _aggregate("MaxPool"), "3x3 max-pooling, stride 1, padding 1",
        "F.max_pool2d(x, kernel_size=3, stride=1, padding=1)"),
    _op("MinPool", 1, _aggregate("MinPool"), "3x3 min-pooling, stride 1, padding 1",
        "-F.max_pool2d(-x, kernel_size=3, stride=1, padding=1)"),
)
"""The paper's primitive operator set H, in Table 1 order."""
