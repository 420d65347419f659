"""Formulas (sympy, LaTeX) and point evaluation, checked against hand-derived values."""

import cmath
import math
import random

import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gp_losses.core.errors import InputError
from gp_losses.formula import evaluate_at, to_latex
from gp_losses.space import SearchSpace
from gp_losses.contract import Branch
from primitives import BOX_INPUTS
from primitives.table1 import Aggregation

yhat = sympy.Symbol("yhat", positive=True)
y = sympy.Symbol("y", nonnegative=True)


def formula(space, text):
    loss = space.parse(text)
    return space.formulas(loss)["loss"], loss[0]


def test_cross_entropy_formula(space):
    expr, _ = formula(space, "Neg(Mul(y, Log(yhat)))")
    assert sympy.simplify(expr - (-y * sympy.log(yhat))) == 0
    assert "\\log" in to_latex(expr)


def test_redundant_operators_simplify_away(space):
    expr, _ = formula(space, "Abs(Square(Sqrt(Add(yhat, yhat))))")
    assert sympy.simplify(expr - 2 * yhat) == 0
    expr, _ = formula(space, "Mul(Inv(yhat), yhat)")
    assert expr == 1


def test_aggregations_print_as_named_functions(space):
    expr, _ = formula(space, "MeanNHW(MaxPool(Neg(yhat)))")
    assert "Mean_nhw" in str(expr) and "MaxPool" in str(expr)
    assert "\\operatorname{Mean}_{nhw}" in to_latex(expr)
    expr, _ = formula(space, "Log(Sqrt(MeanNHW(one)))")  # an aggregate of a constant is it
    assert expr == 0


def test_evaluate_at_gives_value_and_gradient(space):
    _, tree = formula(space, "Neg(Mul(y, Log(yhat)))")
    value, grad, wrt = evaluate_at(tree, space.operators, space.branches[0].inputs, {"yhat": 0.25, "y": 1.0})
    assert value == pytest.approx(-math.log(0.25))
    assert grad == pytest.approx(-1 / 0.25) and wrt == "yhat"
    _, tree = formula(space, "Square(Add(y, Neg(one)))")
    value, grad, wrt = evaluate_at(tree, space.operators, space.branches[0].inputs, {"y": 3.0})
    assert (value, grad, wrt) == (pytest.approx(4.0), pytest.approx(4.0), "y")


def test_evaluate_at_box_inputs():
    space = SearchSpace((Branch("loss", BOX_INPUTS),))
    loss = space.parse("Neg(Log(Mul(i, Inv(e))))")
    value, grad, wrt = evaluate_at(loss[0], space.operators, BOX_INPUTS, {"i": 2.0, "e": 8.0})
    assert value == pytest.approx(math.log(4.0)) and grad == pytest.approx(-0.5) and wrt == "i"


def test_evaluate_at_needs_every_input_the_loss_uses(space):
    _, tree = formula(space, "Mul(y, yhat)")
    with pytest.raises(InputError, match="--at y=VALUE"):
        evaluate_at(tree, space.operators, space.branches[0].inputs, {"yhat": 0.5})
    with pytest.raises(InputError, match="not an input"):
        evaluate_at(tree, space.operators, space.branches[0].inputs, {"yhat": 0.5, "y": 1, "z": 1})


def _strip_aggregations(expr):
    """Aggregations over a single element are the identity."""
    if isinstance(expr, Aggregation):
        return _strip_aggregations(expr.args[0])
    return expr.func(*map(_strip_aggregations, expr.args)) if expr.args else expr


def _numeric(expr, point):
    """Value of a formula at a point where every input is one element."""
    expr = _strip_aggregations(expr)
    return complex(expr.subs(point).evalf())


def _sqrt_nesting(tree):
    """The most Sqrt operators on one root-to-leaf path of `tree`."""
    depth, deepest, opened = 0, 0, []
    for token in str(tree).replace("(", " ( ").replace(")", " ) ").replace(",", " ").split():
        if token == "(":
            opened.append(last == "Sqrt")
            depth += opened[-1]
            deepest = max(deepest, depth)
        elif token == ")":
            depth -= opened.pop()
        last = token
    return deepest


def test_sqrt_nesting_by_hand():
    space = SearchSpace((Branch("loss"),))
    assert _sqrt_nesting(space.parse("Add(Sqrt(y), Sqrt(Sqrt(yhat)))")[0]) == 2
    assert _sqrt_nesting(space.parse("Mul(y, Log(yhat))")[0]) == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 6))
def test_formula_agrees_with_the_compiled_loss(space, seed, steps):
    """The sympy form and the torch callable come from one definition: they must agree."""
    rng = random.Random(seed)
    loss = space.random_loss(rng)
    for _ in range(steps):
        loss, _ = space.offspring(loss, rng)
    value, _, _ = evaluate_at(loss[0], space.operators, space.branches[0].inputs,
                              {"yhat": 0.37, "y": 0.61})
    assume(math.isfinite(value) and abs(value) < 1e6)
    for simplify in (True, False):
        got = _numeric(space.formulas(loss, simplify)["loss"], {yhat: 0.37, y: 0.61})
        assume(cmath.isfinite(got))
        assert got.imag == pytest.approx(0, abs=1e-9)
        # the formula leaves out eps (1e-12), which a Sqrt of ~0 turns into sqrt(eps) = 1e-6, two
        # nested ones into eps ** (1/4) = 1e-3 (Sqrt(Sqrt(Log(one)))), and so on
        eps_error = 2 * 1e-12 ** (0.5 ** _sqrt_nesting(loss[0]))
        assert got.real == pytest.approx(value, rel=1e-6, abs=max(1e-4, eps_error))
