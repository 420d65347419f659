"""Loss trees as formulas: a simplified sympy expression and LaTeX, as in the paper's Table 8.

Each operator's `sympy_fn` gives its form; epsilon is left out (as in Table 8). Inputs carry
their branch's sympy assumptions (a softmax probability is positive, a target nonnegative), so
`Log(yhat)` prints as log(yhat) rather than sign(yhat)·log|yhat|. Simplification is skipped for
large expressions, where sympy can take minutes; the unsimplified form is still exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple

import torch

from gp_losses.core.errors import InputError
from gp_losses.torch_loss import compile_tree, reduce_output
from gp_losses.trees import LossTree
from primitives import OperatorSet, Terminal

if TYPE_CHECKING:
    import sympy

SIMPLIFY_MAX_OPS = 40
"""Expressions with more sympy operations than this are not passed to `sympy.simplify`."""


def to_sympy(tree: LossTree, operators: OperatorSet, inputs: Sequence[Terminal],
             simplify: bool = True) -> sympy.Expr:
    """The tree's element-wise output o as a sympy expression."""
    import sympy  # here, not at import: processes that only train never load it

    symbols = {t.name: t.symbol() for t in inputs}
    stack: list = []
    for node in reversed(tree):
        if node.arity == 0:
            stack.append(symbols[node.name])
        else:
            args = [stack.pop() for _ in range(node.arity)]
            stack.append(operators.by_name[node.name].sympy_fn(*args))
    (expr,) = stack
    if simplify and sympy.count_ops(expr) <= SIMPLIFY_MAX_OPS:
        try:
            simpler = sympy.simplify(expr)
        except Exception:  # sympy gives up on some sign/abs nests; the raw form is exact
            return expr
        # simplify() may answer with case splits (Piecewise) or a longer form: keep the shorter
        if not simpler.has(sympy.Piecewise) and sympy.count_ops(simpler) <= sympy.count_ops(expr):
            expr = simpler
    return expr


def to_latex(expr: sympy.Expr) -> str:
    import sympy

    return sympy.latex(expr)


def evaluate_at(tree: LossTree, operators: OperatorSet, inputs: Sequence[Terminal],
                point: Mapping[str, float]) -> Tuple[float, Optional[float], Optional[str]]:
    """The loss with each input a 1x1x1x1 tensor: (value, gradient, name it is taken wrt).

    The gradient is d loss / d yhat when `yhat` is given, else with respect to the first input
    given; None when nothing is given (a constant loss).
    """
    known = {t.name for t in inputs if t.constant is None}
    for name in point:
        if name not in known:
            raise InputError(f"--at {name}=...: not an input of this loss (inputs: {', '.join(sorted(known))})")
    missing = sorted(tree.input_names() & known - set(point))
    if missing:
        raise InputError(f"--at: the loss uses {missing[0]!r}; give a value with --at {missing[0]}=VALUE")
    values: Dict[str, torch.Tensor] = {
        name: torch.full((1, 1, 1, 1), float(v), dtype=torch.float64, requires_grad=True)
        for name, v in point.items()}
    wrt = "yhat" if "yhat" in values else next(iter(values), None)
    if not values:  # a constant loss: give the constants something to take their shape from
        values = {"_": torch.zeros((1, 1, 1, 1), dtype=torch.float64)}
    loss = reduce_output(compile_tree(tree, operators, inputs)(values))
    grad = None
    if wrt is not None and loss.requires_grad:
        (g,) = torch.autograd.grad(loss, values[wrt], allow_unused=True)
        grad = 0.0 if g is None else float(g.item())
    elif wrt is not None:
        grad = 0.0
    return float(loss.item()), grad, wrt
