"""Random initialization (Fig. 2) and mutations (Fig. 3): validity, limits, proportions."""

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gp_losses import variation
from gp_losses.space import SearchSpace
from gp_losses.contract import Branch
from gp_losses.trees import LossTree
from primitives import BOX_INPUTS, CLASSIFICATION_INPUTS

CLS = SearchSpace((Branch("cls", CLASSIFICATION_INPUTS),))
BOX = SearchSpace((Branch("reg", BOX_INPUTS),))


def assert_valid(tree: LossTree, space: SearchSpace, height_limit: int) -> None:
    """Complete prefix tree, arities from the set, inputs of its branch, height bounded."""
    assert tree.searchSubtree(0) == slice(0, len(tree))  # every operator has its arity of children
    ops = {p.name: p.arity for p in space.operators.primitives}
    inputs = set(space.branches[0].input_names)
    for node in tree:
        if node.arity:
            assert ops[node.name] == node.arity
        else:
            assert node.name in inputs
    assert tree.height <= height_limit


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), depth=st.integers(1, 6), box=st.booleans())
def test_init_trees_have_every_leaf_at_depth_d(seed, depth, box):
    space = BOX if box else CLS
    tree = variation.random_tree(space.psets[0], random.Random(seed), depth)
    depths = tree.depths()
    leaf_depths = {d for d, node in zip(depths, tree) if node.arity == 0}
    op_depths = {d for d, node in zip(depths, tree) if node.arity > 0}
    assert leaf_depths == {depth}
    assert op_depths == set(range(depth))
    assert_valid(tree, space, depth)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), generations=st.integers(1, 30),
       limit=st.integers(3, 8), box=st.booleans())
def test_mutated_trees_are_valid(seed, generations, limit, box):
    space = BOX if box else CLS
    rng = random.Random(seed)
    pset = space.psets[0]
    tree = variation.random_tree(pset, rng, 3)
    for _ in range(generations):
        tree, op, steps = variation.offspring(tree, pset, rng, 3, height_limit=limit)
        assert op in ("copy", "reinit", "mutate")
        assert len(steps) == (2 if op == "mutate" else 0)
        assert set(steps) <= set(variation.MUTATIONS)
        assert_valid(tree, space, limit)


def _single_deletions(tree: LossTree) -> set:
    """Every tree obtained by removing one operator node and keeping one of its children."""
    out = set()
    for k in range(len(tree)):
        end = tree.searchSubtree(k).stop
        for child in tree.children(k):
            out.add(str(LossTree(tree[:k] + tree[child] + tree[end:])))
    return out


def test_each_mutation_does_what_it_says():
    rng = random.Random(3)
    pset = CLS.psets[0]
    for _ in range(300):
        tree = variation.random_tree(pset, rng, 3)
        inserted = variation.insertion(tree, pset, rng)
        assert inserted.n_operators() == tree.n_operators() + 1
        assert str(tree) in _single_deletions(inserted)  # undoing the insertion gives the parent
        deleted = variation.deletion(tree, pset, rng)
        assert str(deleted) in _single_deletions(tree)
        replaced = variation.replacement(tree, pset, rng)
        assert replaced.height <= tree.height
        changed = [k for k, (a, b) in enumerate(zip(tree.depths(), replaced.depths())) if a != b
                   or tree[k].arity != replaced[k].arity or tree[k].name != replaced[k].name]
        assert not changed or tree[changed[0]].arity > 0  # only an operator node is replaced
        assert replaced.n_operators() <= tree.n_operators()


def test_mutations_that_cannot_apply_are_redrawn():
    pset = CLS.psets[0]
    (leaf,) = CLS.parse("yhat")
    rng = random.Random(0)
    assert variation.deletion(leaf, pset, rng) is None
    assert variation.replacement(leaf, pset, rng) is None
    for _ in range(50):
        child, steps = variation.mutate(leaf, pset, rng)
        assert len(steps) == 2
        assert_valid(child, CLS, variation.HEIGHT_LIMIT)
    # at the height limit, with every leaf at the limit, insertion cannot apply
    full = variation.random_tree(pset, rng, 3)
    assert variation.insertion(full, pset, rng, height_limit=3) is None


def test_offspring_proportions_are_10_45_45():
    rng = random.Random(12345)
    (parent,) = CLS.parse("Neg(Mul(y, Log(yhat)))")
    counts = collections.Counter(variation.offspring(parent, CLS.psets[0], rng)[1]
                                 for _ in range(10_000))
    assert abs(counts["copy"] / 10_000 - 0.10) < 0.02
    assert abs(counts["reinit"] / 10_000 - 0.45) < 0.02
    assert abs(counts["mutate"] / 10_000 - 0.45) < 0.02


def test_mutation_kinds_are_drawn_uniformly():
    rng = random.Random(7)
    (parent,) = CLS.parse("Neg(Mul(y, Log(yhat)))")
    counts = collections.Counter(step for _ in range(3000)
                                 for step in variation.mutate(parent, CLS.psets[0], rng)[1])
    for name in variation.MUTATIONS:
        assert abs(counts[name] / 6000 - 1 / 3) < 0.03


def test_same_seed_same_offspring():
    (parent,) = CLS.parse("Neg(Mul(y, Log(yhat)))")
    runs = [[str(variation.offspring(parent, CLS.psets[0], random.Random(42))[0])
             for _ in range(1)] for _ in range(2)]
    assert runs[0] == runs[1]
    seq = [[str(t) for t in _chain(parent, seed=9)] for _ in range(2)]
    assert seq[0] == seq[1]


def _chain(tree, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(50):
        tree = variation.offspring(tree, CLS.psets[0], rng)[0]
        out.append(tree)
    return out


def test_multi_branch_offspring_varies_each_branch():
    space = SearchSpace((Branch("cls"), Branch("reg", BOX_INPUTS)))
    rng = random.Random(1)
    loss = space.random_loss(rng)
    for _ in range(50):
        loss, records = space.offspring(loss, rng)
        assert len(loss) == 2 and len(records) == 2
        assert loss[1].input_names() <= {"i", "u", "e", "one"}
        assert loss[0].input_names() <= {"yhat", "y", "one"}


@pytest.mark.parametrize("depth", [0, 18])
def test_depth_outside_limits_is_bad_input(depth):
    from gp_losses.core.errors import InputError

    with pytest.raises(InputError, match="depth"):
        SearchSpace(depth=depth)
