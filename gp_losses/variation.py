"""Random initialization (paper Fig. 2) and mutation (Fig. 3) of loss trees.

Every random choice comes from the `random.Random` the caller passes, so a seed fixes the
result. The paper's root is the output node that aggregates the tree (Eq. 3); every node of a
`LossTree`, its first operator included, is a "non-root node" in the paper's sense.

Offspring (section 3.2): copy with p=0.1; else re-initialize with p=0.5; else two mutations,
each drawn uniformly from {insertion, deletion, replacement}. A mutation that cannot apply
(deletion or replacement on a tree with no operator, insertion past the height limit) is
replaced by a draw among the ones that can.
"""

from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Tuple

from deap import gp

from gp_losses.messages import Made
from gp_losses.trees import LossTree

HEIGHT_LIMIT = 17
"""Default maximum tree height; DEAP's compile fails past ~90 levels, and nothing useful is
that deep (DEAP's own recommendation, `staticLimit`, is 17)."""


def _operators(pset: gp.PrimitiveSet) -> list:
    return pset.primitives[object]


def _inputs(pset: gp.PrimitiveSet) -> list:
    return pset.terminals[object]


def random_tree(pset: gp.PrimitiveSet, rng: random.Random, depth: int = 3) -> LossTree:
    """A tree with exactly `depth` operators on every root-to-leaf path (Fig. 2): operators
    uniform over the set, leaves uniform over the branch's inputs."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    nodes: list = []

    def grow(level: int) -> None:
        if level == depth:
            nodes.append(rng.choice(_inputs(pset)))
            return
        op = rng.choice(_operators(pset))
        nodes.append(op)
        for _ in range(op.arity):
            grow(level + 1)

    grow(0)
    return LossTree(nodes)


def _subtree_heights(tree: LossTree, depths: List[int]) -> List[int]:
    heights = []
    for index in range(len(tree)):
        sub = tree.searchSubtree(index)
        heights.append(max(depths[sub]) - depths[index])
    return heights


def insertion(tree: LossTree, pset: gp.PrimitiveSet, rng: random.Random,
              height_limit: int = HEIGHT_LIMIT) -> Optional[LossTree]:
    """Insert a random operator between a random node and its parent; a binary operator takes
    a random input as its other child (placed at a random side)."""
    depths = tree.depths()
    if tree.height + 1 <= height_limit:
        sites = list(range(len(tree)))
    else:
        heights = _subtree_heights(tree, depths)
        sites = [k for k in range(len(tree)) if depths[k] + heights[k] + 1 <= height_limit]
    if not sites:
        return None
    index = rng.choice(sites)
    sub = tree.searchSubtree(index)
    op = rng.choice(_operators(pset))
    children = [[node] for node in (rng.choice(_inputs(pset)) for _ in range(op.arity - 1))]
    children.insert(rng.randrange(op.arity), tree[sub])
    return LossTree(tree[:index] + [op] + sum(children, []) + tree[sub.stop:])


def deletion(tree: LossTree, pset: gp.PrimitiveSet, rng: random.Random,
             height_limit: int = HEIGHT_LIMIT) -> Optional[LossTree]:
    """Remove a random operator node; one of its children, at random, takes its place."""
    sites = [k for k, node in enumerate(tree) if node.arity > 0]
    if not sites:
        return None
    index = rng.choice(sites)
    keep = rng.choice(tree.children(index))
    return LossTree(tree[:index] + tree[keep] + tree[tree.searchSubtree(index).stop:])


def replacement(tree: LossTree, pset: gp.PrimitiveSet, rng: random.Random,
                height_limit: int = HEIGHT_LIMIT) -> Optional[LossTree]:
    """Replace a random operator node's operator with a random one. Extra children are
    dropped at random (the kept ones stay in order); missing ones are random inputs placed at
    random positions."""
    sites = [k for k, node in enumerate(tree) if node.arity > 0]
    if not sites:
        return None
    index = rng.choice(sites)
    op = rng.choice(_operators(pset))
    children = [tree[s] for s in tree.children(index)]
    if len(children) > op.arity:
        kept = sorted(rng.sample(range(len(children)), op.arity))
        children = [children[k] for k in kept]
    while len(children) < op.arity:
        children.insert(rng.randrange(len(children) + 1), [rng.choice(_inputs(pset))])
    return LossTree(tree[:index] + [op] + sum(children, []) + tree[tree.searchSubtree(index).stop:])


MUTATIONS: Dict[str, Callable[..., Optional[LossTree]]] = {
    "insertion": insertion,
    "deletion": deletion,
    "replacement": replacement,
}


def mutate(tree: LossTree, pset: gp.PrimitiveSet, rng: random.Random, steps: int = 2,
           height_limit: int = HEIGHT_LIMIT) -> Tuple[LossTree, List[str]]:
    """Apply `steps` mutations in sequence, each drawn uniformly; returns the names applied."""
    applied = []
    for _ in range(steps):
        names = list(MUTATIONS)
        while True:
            name = rng.choice(names)
            result = MUTATIONS[name](tree, pset, rng, height_limit)
            if result is not None:
                break
            names.remove(name)  # cannot apply here: draw among the others
        tree = result
        applied.append(name)
    return tree, applied


def offspring(tree: LossTree, pset: gp.PrimitiveSet, rng: random.Random, depth: int = 3,
              height_limit: int = HEIGHT_LIMIT, p_copy: float = 0.1,
              p_reinit: float = 0.5) -> Tuple[LossTree, str, List[str]]:
    """One offspring of `tree` (section 3.2): (child, "copy"|"reinit"|"mutate", mutation steps)."""
    if rng.random() < p_copy:
        return LossTree(tree), "copy", []
    if rng.random() < p_reinit:
        return random_tree(pset, rng, depth), "reinit", []
    child, steps = mutate(tree, pset, rng, 2, height_limit)
    return child, "mutate", steps


def candidate_rng(seed: int, slot: int, branch: int, index: int) -> random.Random:
    """The generator of candidate `index` for branch `branch` of offspring slot `slot`: fixed by
    the run seed and those numbers alone, so any process can make any candidate."""
    return random.Random(f"{seed}/{slot}/{branch}/{index}")


def candidate(pset: gp.PrimitiveSet, parent: Optional[LossTree], rng: random.Random, depth: int = 3,
              height_limit: int = HEIGHT_LIMIT) -> Tuple[LossTree, Made]:
    """A candidate tree for one branch: random (`parent` None, while initializing) or an
    offspring of the parent's tree; with how it was made."""
    if parent is None:
        return random_tree(pset, rng, depth), Made("init")
    child, op, steps = offspring(parent, pset, rng, depth, height_limit)
    return child, Made(op, tuple(steps))
