"""Operator sets: user operators by dotted path, and refusal of bad ones with a reason."""

import textwrap

import pytest
import sympy
import torch

from gp_losses.core.errors import InputError, OperatorError
from primitives import (CLASSIFICATION_INPUTS, TABLE1, OperatorSet, Primitive, Terminal,
                        operator_set, resolve_operators)

def test_table1_set_builds_a_deap_set_per_branch_inputs():
    ops = operator_set()
    pset = ops.pset(CLASSIFICATION_INPUTS)
    assert [p.name for p in pset.primitives[object]] == [p.name for p in TABLE1]
    assert [t.name for t in pset.terminals[object]] == ["yhat", "y", "one"]
    assert pset.terminals[object][0].format() == "yhat"


@pytest.mark.parametrize("prim, reason", [
    (Primitive("Flat", 1, lambda x: x.sum(dim=1), lambda a: a), "shape"),
    (Primitive("RawLog", 1, torch.log, sympy.log), "non-finite"),
    (Primitive("Detached", 1, lambda x: x.detach() * 2, lambda a: 2 * a), "no gradient"),
    (Primitive("Crash", 1, lambda x: x[99], lambda a: a), "raised IndexError"),
    (Primitive("Nullary", 0, lambda: torch.zeros(1), lambda: sympy.S(0)), "arity"),
    (Primitive("bad name", 1, torch.neg, lambda a: -a), "identifier"),
    (Primitive("NoSympy", 1, torch.neg, lambda a: "minus"), "sympy"),
    (Primitive("GradNaN", 1, lambda x: torch.sqrt(torch.abs(x) * 0), lambda a: a), "gradient"),
])
def test_bad_operator_is_refused_with_its_name_and_reason(prim, reason):
    with pytest.raises(OperatorError) as info:
        OperatorSet([prim])
    assert repr(prim.name) in str(info.value) and reason in str(info.value)


def test_duplicate_and_clashing_names_are_refused():
    with pytest.raises(OperatorError, match="defined twice"):
        operator_set(["Add"])
    clash = Primitive("y", 1, torch.neg, lambda a: -a)
    with pytest.raises(OperatorError, match="also an operator name"):
        OperatorSet(list(TABLE1) + [clash]).pset(CLASSIFICATION_INPUTS)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_ops.py").write_text(textwrap.dedent("""
        import torch
        from primitives import Primitive
        Cube = Primitive("Cube", 1, lambda x: x * x * x, lambda a: a ** 3)
        Half = Primitive("Half", 1, lambda x: 0.5 * x, lambda a: a / 2)
        BOTH = [Cube, Half]
        NOT_AN_OP = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_ops"


def test_user_operators_by_dotted_path(user_module):
    assert [p.name for p in resolve_operators([f"{user_module}:Cube"])] == ["Cube"]
    ops = operator_set([f"{user_module}:BOTH"])
    assert ops.names[-2:] == ("Cube", "Half")
    assert len(ops.names) == 16


@pytest.mark.parametrize("spec, message", [
    ("my_ops:Cueb", "did you mean 'Cube'"),
    ("my_ops:NOT_AN_OP", "expected a primitives.Primitive"),
    ("no_such_module_xyz:Op", "cannot import module"),
    ("Cubee", "unknown operator"),
    ("my_ops:", "dotted path"),
])
def test_bad_operator_spec_is_bad_input(user_module, spec, message):
    with pytest.raises(InputError, match=message):
        operator_set([spec])


def test_terminal_symbols_carry_assumptions():
    yhat = Terminal("yhat", prediction=True, assumptions={"positive": True})
    assert yhat.symbol().is_positive
    assert Terminal("one", constant=1.0).symbol() == 1
