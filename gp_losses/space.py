"""The search space of one task: its loss branches, the operator set, and the variation rules.

`SearchSpace` is what the engine and the CLI hold: it parses and prints losses, samples
random ones, makes offspring and compiles losses to torch, all through the one operator set.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from deap import gp

from gp_losses import variation
from gp_losses.core.errors import InputError, ParseError
from gp_losses.formula import to_sympy
from gp_losses.torch_loss import CompiledLoss, PythonLoss
from gp_losses.contract import Branch
from gp_losses.trees import Loss, LossTree, check_branch_names, parse_tree

if TYPE_CHECKING:
    import sympy
from primitives import OperatorSet, operator_set


class SearchSpace:
    """Branches × operators × (init depth D, height limit); see paper section 3.

    `python_losses` ({branch: {name: function}}) are the task's baselines written in Python:
    a branch's expression may be one of their names instead of a tree (see `PythonLoss`).
    """

    def __init__(self, branches: Sequence[Branch] = (Branch("loss"),),
                 operators: Optional[OperatorSet] = None, depth: int = 3,
                 height_limit: int = variation.HEIGHT_LIMIT,
                 python_losses: Optional[Mapping[str, Mapping[str, Callable]]] = None) -> None:
        if not branches:
            raise InputError("a search space needs at least one loss branch")
        if not 1 <= depth <= height_limit:
            raise InputError(f"depth must be between 1 and the height limit {height_limit}, got {depth}")
        self.branches = tuple(branches)
        self.operators = operators if operators is not None else operator_set()
        self.depth = depth
        self.height_limit = height_limit
        self.psets: Tuple[gp.PrimitiveSet, ...] = tuple(
            self.operators.pset(b.inputs) for b in self.branches)
        self.python_losses = {b.name: dict((python_losses or {}).get(b.name, {})) for b in self.branches}

    @property
    def branch_names(self) -> Tuple[str, ...]:
        return tuple(b.name for b in self.branches)

    def parse(self, expr: Union[str, Mapping[str, str]]) -> Loss:
        """A Loss from text: one expression for a one-branch space, else {branch: expression}."""
        if isinstance(expr, str):
            if len(self.branches) != 1:
                raise ParseError(f"this loss has {len(self.branches)} branches "
                                 f"({', '.join(self.branch_names)}): give one expression per branch")
            return Loss([self._branch(expr, 0)])
        texts = dict(expr)
        check_branch_names(texts, self.branches)
        return Loss([self._branch(texts[b.name], k) for k, b in enumerate(self.branches)])

    def python_loss(self, text: str, index: int) -> Optional[PythonLoss]:
        """The branch's Python loss named `text`, or None (`text` is an expression)."""
        fn = self.python_losses[self.branches[index].name].get(text.strip())
        return PythonLoss(text.strip(), fn) if fn is not None else None

    def _branch(self, text: str, index: int) -> Union[LossTree, PythonLoss]:
        named = self.python_loss(text, index)
        return named if named is not None else self._checked(parse_tree(text, self.psets[index]), index)

    def _checked(self, tree: LossTree, index: int) -> LossTree:
        if tree.height > self.height_limit:
            raise ParseError(f"loss branch {self.branches[index].name!r} has height {tree.height}, "
                             f"over the height limit {self.height_limit}")
        return tree

    def format(self, loss: Loss) -> Dict[str, str]:
        """{branch name: expression}."""
        return {b.name: str(t) for b, t in zip(self.branches, loss)}

    def random_loss(self, rng: random.Random) -> Loss:
        """A random loss (Fig. 2), one full tree of depth D per branch."""
        return Loss(variation.random_tree(pset, rng, self.depth) for pset in self.psets)

    def offspring(self, loss: Loss, rng: random.Random) -> Tuple[Loss, List[dict]]:
        """An offspring, each branch varied independently (Appendix A.2); per-branch records
        {"op": "copy"|"reinit"|"mutate", "steps": [...]}."""
        trees, records = [], []
        for tree, pset in zip(loss, self.psets):
            child, op, steps = variation.offspring(tree, pset, rng, self.depth, self.height_limit)
            trees.append(child)
            records.append({"op": op, "steps": steps})
        return Loss(trees), records

    def compile(self, loss: Loss) -> CompiledLoss:
        return CompiledLoss(loss, self.branches, self.operators)

    def formulas(self, loss: Loss, simplify: bool = True) -> Dict[str, sympy.Expr]:
        """{branch name: the branch's element-wise output as a sympy expression}."""
        for branch, tree in zip(self.branches, loss):
            if isinstance(tree, PythonLoss):
                raise InputError(f"loss branch {branch.name!r} is the Python loss {tree.name!r} "
                                 f"({tree.where}): it has no formula; only trees have one")
        return {b.name: to_sympy(t, self.operators, b.inputs, simplify)
                for b, t in zip(self.branches, loss)}
