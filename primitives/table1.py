"""The 14 operators of the paper's Table 1, epsilon = 1e-12, each keeping (N, C, H, W) shape.

Aggregation operators replace each element with the aggregate it belongs to (broadcast back).
Max/Min-Pooling are 3x3, stride 1, padding 1; padded cells never win (torch pads with -inf).
Formulas omit epsilon, as the paper's Table 8 does.
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F

from primitives.base import EPS, Primitive



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


# The names print in LaTeX as \operatorname{Mean}_{nhw}, \operatorname{MaxPool}, ...
Mean_nhw = type("Mean_nhw", (Aggregation,), {})
Mean_c = type("Mean_c", (Aggregation,), {})
MaxPool = type("MaxPool", (Aggregation,), {})
MinPool = type("MinPool", (Aggregation,), {})


def _inv(x: torch.Tensor) -> torch.Tensor:
    return torch.reciprocal(x + EPS)


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log(torch.abs(x) + EPS)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.sqrt(torch.abs(x) + EPS)


def _mean_nhw(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(0, 2, 3), keepdim=True).expand_as(x)


def _mean_c(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True).expand_as(x)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _min_pool(x: torch.Tensor) -> torch.Tensor:
    return -F.max_pool2d(-x, kernel_size=3, stride=1, padding=1)


TABLE1 = (
    Primitive("Add", 2, torch.add, lambda a, b: a + b, "x + y"),
    Primitive("Mul", 2, torch.mul, lambda a, b: a * b, "x * y"),
    Primitive("Neg", 1, torch.neg, lambda a: -a, "-x"),
    Primitive("Abs", 1, torch.abs, sympy.Abs, "|x|"),
    Primitive("Inv", 1, _inv, lambda a: 1 / a, "1 / (x + eps)"),
    Primitive("Log", 1, _log, lambda a: sympy.sign(a) * sympy.log(sympy.Abs(a)),
              "sign(x) * log(|x| + eps)"),
    Primitive("Exp", 1, torch.exp, sympy.exp, "e^x"),
    Primitive("Tanh", 1, torch.tanh, sympy.tanh, "tanh(x)"),
    Primitive("Square", 1, torch.square, lambda a: a ** 2, "x^2"),
    Primitive("Sqrt", 1, _sqrt, lambda a: sympy.sign(a) * sympy.sqrt(sympy.Abs(a)),
              "sign(x) * sqrt(|x| + eps)"),
    Primitive("MeanNHW", 1, _mean_nhw, Mean_nhw, "mean over N, H, W, broadcast back"),
    Primitive("MeanC", 1, _mean_c, Mean_c, "mean over C, broadcast back"),
    Primitive("MaxPool", 1, _max_pool, MaxPool, "3x3 max-pooling, stride 1, padding 1"),
    Primitive("MinPool", 1, _min_pool, MinPool, "3x3 min-pooling, stride 1, padding 1"),
)
"""The paper's primitive operator set H, in Table 1 order."""
