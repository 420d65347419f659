"""Loss trees as torch callables (paper Eq. 3 and 4), interpreted without `eval`.

`compile_tree` turns a tree into a function from the branch inputs to the element-wise output
o, of shape (N, C, H, W). `reduce_output` aggregates o to the branch loss: `"mean"` is
sum(o) / (N·H·W) (Eq. 3, no normalization over C, as cross-entropy); `"sum"` is the plain sum
the loss-rejection protocol uses (Appendix A). A multi-branch loss is the weighted sum of its
branch losses (Eq. 4). A branch may instead hold a `PythonLoss`: a task's baseline written in
Python because no tree expresses it (Lovász-softmax), which computes its branch loss itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch

from gp_losses.core.errors import InputError
from gp_losses.contract import Branch
from gp_losses.trees import Loss, LossTree
from primitives import OperatorSet, Terminal

Inputs = Mapping[str, torch.Tensor]
TreeFn = Callable[[Dict[str, torch.Tensor]], torch.Tensor]


def _build(tree: LossTree, operators: OperatorSet,
           fixed: Optional[Dict[str, torch.Tensor]] = None) -> TreeFn:
    """A closure per node, built once from the prefix list (right to left, with a stack).

    With `fixed` (values of inputs that never change between calls), a subtree that uses only
    those is computed here, once, and becomes a constant of the closure.
    """
    stack: list = []  # (closure, value if the subtree is fixed else None)
    for node in reversed(tree):
        if node.arity == 0:
            value = fixed.get(node.name) if fixed is not None else None
            if value is not None:
                stack.append((lambda env, _v=value: _v, value))
            else:
                stack.append((lambda env, _name=node.name: env[_name], None))
            continue
        fn = operators.by_name[node.name].torch_fn
        args = [stack.pop() for _ in range(node.arity)]
        if all(v is not None for _, v in args):
            value = fn(*(v for _, v in args))
            stack.append((lambda env, _v=value: _v, value))
            continue
        if node.arity == 1:
            (a, _), = args
            stack.append((lambda env, _f=fn, _a=a: _f(_a(env)), None))
        elif node.arity == 2:
            (a, _), (b, _) = args
            stack.append((lambda env, _f=fn, _a=a, _b=b: _f(_a(env), _b(env)), None))
        else:
            fns = tuple(g for g, _ in args)
            stack.append((lambda env, _f=fn, _args=fns: _f(*(g(env) for g in _args)), None))
    ((root, _),) = stack
    return root


def compile_tree(tree: LossTree, operators: OperatorSet, inputs: Sequence[Terminal],
                 fixed: Optional[Inputs] = None) -> Callable[[Inputs], torch.Tensor]:
    """A function from {input name: (N, C, H, W) tensor} to the tree's element-wise output o.

    Constant inputs (`one`) are filled in, shaped like the first tensor given. `fixed` gives
    inputs that stay the same on every call (the targets, in the rejection protocol): the
    subtrees that depend only on them and on constants are computed once, here.
    """
    needed = tree.input_names()
    constants = [(t.name, t.constant) for t in inputs if t.constant is not None and t.name in needed]
    variables = [t.name for t in inputs if t.constant is None and t.name in needed]
    frozen = None
    if fixed:
        ref = next(iter(fixed.values()))
        frozen = {name: v.detach() for name, v in fixed.items() if name in needed}
        frozen.update((name, torch.full_like(ref, value)) for name, value in constants)
    root = _build(tree, operators, frozen)

    def output(values: Inputs) -> torch.Tensor:
        missing = [name for name in variables if name not in values]
        if missing:
            raise InputError(f"loss input {missing[0]!r} was not given (given: {', '.join(values)})")
        env = dict(values)
        if constants:  # shaped like the branch's own inputs (a task may pass others beside them)
            ref = values[variables[0]] if variables else next(iter(values.values()))
            for name, value in constants:
                env[name] = torch.full_like(ref, value)
        return root(env)

    return output


def reduce_output(o: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Branch loss from o: sum(o) / (N·H·W) for "mean" (Eq. 3), sum(o) for "sum"; 0 for an
    empty o (N = 0: a detection batch without a positive sample for a box branch)."""
    if o.dim() != 4:
        raise InputError(f"loss inputs must be (N, C, H, W) tensors, got shape {tuple(o.shape)}")
    total = o.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        n, _, h, w = o.shape
        return total / max(n * h * w, 1)  # no sample (a batch without positive boxes): 0, as torchvision's
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


@dataclass(frozen=True)
class PythonLoss:
    """A branch loss written in Python: `fn` maps the branch inputs to the branch loss, a scalar
    at the scale it trains with (as Eq. 3's mean over N·H·W is for a tree). Named in place of
    an expression (`--loss lovasz`); trained and retrained like a tree, but never searched,
    checked by the protocol or exported (it is code already: `fn`'s module)."""

    name: str
    fn: Callable[[Inputs], torch.Tensor]

    def __str__(self) -> str:
        return self.name

    @property
    def weight(self) -> Optional[float]:
        """The weight the function asks for in Eq. 4 (`fn.weight`), else None: the branch's.
        A baseline that reproduces a library's own loss (torchvision's smooth L1 at weight 1
        on a branch the paper weighs 10) says so here."""
        return getattr(self.fn, "weight", None)

    @property
    def where(self) -> str:
        """The function's import path, for messages."""
        return f"{self.fn.__module__}.{self.fn.__qualname__}"


class CompiledLoss:
    """A multi-branch loss: sum over branches of weight × branch loss (Eq. 4)."""

    def __init__(self, loss: Loss, branches: Sequence[Branch], operators: OperatorSet) -> None:
        if len(loss) != len(branches):
            raise ValueError(f"loss has {len(loss)} trees for {len(branches)} branches")
        self.branches = tuple(branches)
        self.outputs: list = [t if isinstance(t, PythonLoss) else compile_tree(t, operators, b.inputs)
                              for t, b in zip(loss, branches)]

    def weight(self, index: int) -> float:
        """Branch `index`'s weight in Eq. 4: its own, unless a Python loss asks for another."""
        output = self.outputs[index]
        if isinstance(output, PythonLoss) and output.weight is not None:
            return output.weight
        return self.branches[index].weight

    def branch(self, index: int, values: Inputs, reduction: str = "mean") -> torch.Tensor:
        """The loss of one branch (unweighted)."""
        output = self.outputs[index]
        if isinstance(output, PythonLoss):
            if reduction != "mean":
                raise InputError(f"the Python loss {output.name!r} has its own reduction only "
                                 f"(asked for {reduction!r}): the rejection protocol checks trees")
            return output.fn(values)
        return reduce_output(output(values), reduction)

    def __call__(self, values: Mapping[str, Inputs], reduction: str = "mean") -> torch.Tensor:
        """Total loss from {branch name: {input name: tensor}}."""
        total = None
        for k, branch in enumerate(self.branches):
            term = self.weight(k) * self.branch(k, values[branch.name], reduction)
            total = term if total is None else total + term
        return total
