"""Loss trees (paper section 3.1): one DEAP `PrimitiveTree` per loss branch, and their parser.

A tree is DEAP's prefix list of operator and input nodes; its root is the first operator, so
a tree of height D has D operators on its longest root-to-leaf path (the paper counts the
output node as the root on top of these). Strings look like `Neg(Mul(y, Log(yhat)))`; the
parser knows only the operator and input names of a branch and never evaluates text.
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Sequence, Tuple

from deap import gp

from gp_losses.contract import Branch
from gp_losses.core.errors import ParseError, did_you_mean


class LossTree(gp.PrimitiveTree):
    """One branch's loss as a DEAP prefix list (module-level class: no `creator`)."""

    def depths(self) -> List[int]:
        """Depth of every node, in prefix order (root 0)."""
        out, stack = [], [0]
        for node in self:
            depth = stack.pop()
            out.append(depth)
            stack.extend([depth + 1] * node.arity)
        return out

    def children(self, index: int) -> List[slice]:
        """The slices of the subtrees under node `index`, left to right."""
        out, start = [], index + 1
        for _ in range(self[index].arity):
            sub = self.searchSubtree(start)
            out.append(sub)
            start = sub.stop
        return out

    def input_names(self) -> frozenset:
        """Names of the inputs the tree uses."""
        return frozenset(node.name for node in self if node.arity == 0)

    def n_operators(self) -> int:
        return sum(1 for node in self if node.arity > 0)


class Loss(list):
    """A loss over M branches: a list of M `LossTree`s, one per branch, in branch order."""

    def __init__(self, trees: Sequence[LossTree] = ()) -> None:
        super().__init__(trees)


_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),])|(?P<bad>\S))")


def _tokens(text: str) -> Iterator[Tuple[str, str, int]]:
    """(kind, text, column) for each token; kind is 'name', 'punct' or 'bad'."""
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            return
        kind = match.lastgroup
        yield kind, match.group(kind), match.start(kind) + 1
        pos = match.end()


def parse_tree(text: str, pset: gp.PrimitiveSet) -> LossTree:
    """Parse `Op(arg, ...)` text into a LossTree over `pset`; ParseError says what and where."""
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty loss expression")
    operators = {p.name: p for p in pset.primitives[object]}
    inputs = {t.name: t for t in pset.terminals[object]}
    tokens = list(_tokens(text))
    nodes: list = []
    pos = 0

    def fail(message: str, column: int) -> ParseError:
        return ParseError(f"in loss {text!r} at column {column}: {message}")

    def peek() -> Tuple[str, str, int]:
        return tokens[pos] if pos < len(tokens) else ("end", "end of input", len(text) + 1)

    def expect(symbol: str) -> None:
        nonlocal pos
        kind, tok, col = peek()
        if tok != symbol:
            raise fail(f"expected {symbol!r}, found {tok!r}", col)
        pos += 1

    def expression() -> None:
        nonlocal pos
        kind, tok, col = peek()
        if kind != "name":
            raise fail(f"expected an operator or an input ({', '.join(inputs)}), found {tok!r}", col)
        pos += 1
        if tok in inputs:
            nodes.append(inputs[tok])
            if peek()[1] == "(":
                raise fail(f"input {tok!r} takes no arguments", peek()[2])
            return
        if tok not in operators:
            raise fail(
                f"unknown name {tok!r}" + did_you_mean(tok, list(operators) + list(inputs))
                + f"; operators: {', '.join(operators)}; inputs: {', '.join(inputs)}", col)
        prim = operators[tok]
        nodes.append(prim)
        expect("(")
        for k in range(prim.arity):
            if k:
                kind, sep, sep_col = peek()
                if sep != ",":
                    raise fail(f"{tok} takes {prim.arity} arguments, got {k}", sep_col)
                pos += 1
            expression()
        kind, close, close_col = peek()
        if close == ",":
            raise fail(f"{tok} takes {prim.arity} argument{'s' * (prim.arity > 1)}, got more", close_col)
        expect(")")

    expression()
    if pos < len(tokens):
        raise fail(f"unexpected {tokens[pos][1]!r} after a complete expression", tokens[pos][2])
    return LossTree(nodes)


def check_branch_names(texts: Dict[str, str], branches: Sequence[Branch]) -> None:
    """ParseError unless `texts` names every branch and no other."""
    names = [b.name for b in branches]
    unknown = [n for n in texts if n not in names]
    if unknown:
        raise ParseError(f"unknown loss branch {unknown[0]!r}" + did_you_mean(unknown[0], names)
                         + f"; branches: {', '.join(names)}")
    missing = [n for n in names if n not in texts]
    if missing:
        raise ParseError(f"no expression given for loss branch {missing[0]!r}")
