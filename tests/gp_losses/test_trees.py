"""Parsing and printing loss trees: round trips, pickling, and clear errors (never eval)."""

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_losses.core.errors import ParseError
from gp_losses.space import SearchSpace
from gp_losses.contract import Branch
from gp_losses.trees import LossTree, parse_tree
from primitives import BOX_INPUTS, CLASSIFICATION_INPUTS

SPACES = [SearchSpace((Branch("cls", CLASSIFICATION_INPUTS),)),
          SearchSpace((Branch("reg", BOX_INPUTS),))]


def _random_tree(space, seed, steps):
    """A random tree: an initial one, then a few offspring steps (sizes and shapes vary)."""
    rng = random.Random(seed)
    loss = space.random_loss(rng)
    for _ in range(steps):
        loss, _ = space.offspring(loss, rng)
    return loss[0]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 8), which=st.sampled_from([0, 1]))
def test_parse_of_str_gives_the_same_tree(seed, steps, which):
    space = SPACES[which]
    tree = _random_tree(space, seed, steps)
    again = parse_tree(str(tree), space.psets[0])
    assert again == tree
    assert str(again) == str(tree)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 8))
def test_trees_pickle(seed, steps):
    tree = _random_tree(SPACES[0], seed, steps)
    back = pickle.loads(pickle.dumps(tree))
    assert isinstance(back, LossTree) and back == tree and str(back) == str(tree)


def test_parse_known_expression(space):
    (tree,) = space.parse("Neg(Mul(y, Log(yhat)))")
    assert [node.name for node in tree] == ["Neg", "Mul", "y", "Log", "yhat"]
    assert tree.height == 3 and tree.depths() == [0, 1, 2, 2, 3]
    assert str(tree) == "Neg(Mul(y, Log(yhat)))"
    (compact,) = space.parse("  Neg( Mul(y,Log( yhat ) ) ) ")
    assert compact == tree


@pytest.mark.parametrize("text, fragment", [
    ("Foo(yhat)", "unknown name 'Foo'"),
    ("Lgo(yhat)", "did you mean 'Log'"),
    ("Mul(yhat)", "Mul takes 2 arguments, got 1"),
    ("Neg(yhat, y)", "Neg takes 1 argument, got more"),
    ("Log(x)", "unknown name 'x'"),
    ("Log(i)", "unknown name 'i'"),
    ("Log(yhat))", "unexpected ')'"),
    ("Log(yhat) y", "unexpected 'y'"),
    ("Add(yhat, 2)", "found '2'"),
    ("__import__('os')", "unknown name '__import__'"),
    ("Neg(yhat", "expected ')', found 'end of input'"),
    ("yhat(y)", "input 'yhat' takes no arguments"),
    ("Neg", "expected '('"),
    ("", "empty loss expression"),
    ("Log(yhat); Neg(y)", "unexpected ';'"),
])
def test_malformed_expression_is_a_parse_error_naming_the_token(space, text, fragment):
    with pytest.raises(ParseError) as info:
        space.parse(text)
    assert fragment in str(info.value)


def test_box_branch_has_its_own_inputs():
    (tree,) = SPACES[1].parse("Neg(Log(Mul(i, Inv(e))))")
    assert tree.input_names() == {"i", "e"}
    with pytest.raises(ParseError, match="unknown name 'yhat'"):
        SPACES[1].parse("Log(yhat)")


def test_multi_branch_loss_parses_one_expression_per_branch():
    space = SearchSpace((Branch("cls"), Branch("reg", BOX_INPUTS, weight=10.0)))
    loss = space.parse({"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Neg(Log(Mul(i, Inv(u))))"})
    assert space.format(loss) == {"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Neg(Log(Mul(i, Inv(u))))"}
    with pytest.raises(ParseError, match="give one expression per branch"):
        space.parse("Log(yhat)")
    with pytest.raises(ParseError, match="no expression given for loss branch 'reg'"):
        space.parse({"cls": "Log(yhat)"})
    with pytest.raises(ParseError, match="did you mean 'reg'"):
        space.parse({"cls": "Log(yhat)", "rge": "Log(i)"})


def test_height_limit_applies_to_parsed_trees():
    space = SearchSpace(height_limit=3, depth=2)
    space.parse("Neg(Neg(Neg(yhat)))")
    with pytest.raises(ParseError, match="over the height limit 3"):
        space.parse("Neg(Neg(Neg(Neg(yhat))))")
