"""A found loss as a standalone PyTorch module: a Python file that imports only torch.

    gp-losses export RUN_DIR [--rank K] [-o FILE]        the file
    gp_losses.export.to_module(RUN_DIR or EXPR, task=…)  the same module, from Python

The file holds each operator the loss uses as a function (its `code` from the operator set,
epsilon kept: Log and Sqrt stay signed, Inv adds 1e-12), one method per branch returning the
element-wise output o, the reduction of Eq. 3 (sum(o) / (N·H·W), no normalization over C)
and the weighted sum over branches of Eq. 4. The docstring says how the task maps network
outputs and targets to the inputs (softmax, one-hot, heatmap weights): a loss found on
probabilities must be given probabilities.
"""

from __future__ import annotations

import textwrap
import types
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from gp_losses import __version__
from gp_losses.core.errors import InputError
from gp_losses.rundir import RunDir, search_pick
from gp_losses.space import SearchSpace
from gp_losses.torch_loss import PythonLoss
from gp_losses.trees import Loss

CLASS_NAME = "FoundLoss"


def _call(tree, index: int = 0) -> tuple:
    """(source of the subtree at `index`, index after it): nested calls of operator functions."""
    node = tree[index]
    if node.arity == 0:
        return node.name, index + 1
    args, at = [], index + 1
    for _ in range(node.arity):
        text, at = _call(tree, at)
        args.append(text)
    return f"{node.name}({', '.join(args)})", at


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def to_source(space: SearchSpace, loss: Loss, header: str = "",
              inputs_doc: Optional[Mapping[str, str]] = None, class_name: str = CLASS_NAME,
              dropin: Optional[Mapping[str, Any]] = None) -> str:
    """The standalone module's source for `loss` in `space`. With `dropin` (a task's
    `export_inputs`) a one-branch module is called as torch's own losses are: `labels`:
    `FoundLoss(weight=None, ignore_index=K, reduction="mean")(logits, target)`; `dense`:
    `FoundLoss(reduction="mean")(output, target, weight=None)`; `raw()` takes the loss
    inputs themselves. Without it (or for several branches) `forward` takes the loss inputs."""
    inputs_doc = inputs_doc or {}
    single = len(space.branches) == 1
    kind = (dropin or {}).get("kind") if single else None
    if kind not in (None, "labels", "dense"):
        raise InputError(f"the task's export_inputs kind is {kind!r}: expected 'labels' or 'dense' (or "
                         "no export_inputs, for the raw form)")
    for branch, tree in zip(space.branches, loss):
        if isinstance(tree, PythonLoss):
            raise InputError(f"loss branch {branch.name!r} is the Python loss {tree.name!r}: it is code "
                             f"already; import {tree.where} instead of exporting it")
    used = sorted({node.name for tree in loss for node in tree if node.arity > 0})
    missing = [name for name in used if not space.operators.by_name[name].code]
    if missing:
        raise InputError(f"operator {missing[0]!r} has no `code` (Primitive(..., code=...)): a loss "
                         "that uses it cannot be written as a standalone module")
    formulas = space.formulas(loss)
    doc = [header.strip() or "A loss function found by gp-losses.", ""]
    for branch, tree in zip(space.branches, loss):
        doc += [f"Branch `{branch.name}` (weight {branch.weight:g}):",
                f"    o = {formulas[branch.name]}",
                "    (simplified, epsilon left out; the code below keeps it)",
                f"    tree: {tree}"]
        if branch.name in inputs_doc:
            doc.append(textwrap.fill(f"inputs: {inputs_doc[branch.name]}", 92, initial_indent="    ",
                                     subsequent_indent="        "))
        doc.append("")
    doc += ["Each branch's loss is sum(o) / (N * H * W) over its (N, C, H, W) output o (Eq. 3 of",
            "AutoLoss-Zero: no normalization over C, as cross-entropy); the total is the sum of",
            "weight * branch loss (Eq. 4).", "", "Usage:", ""]
    if kind == "labels":
        doc += [f"    criterion = {class_name}()          # as nn.CrossEntropyLoss(ignore_index={dropin['ignore_index']})",
                "    loss = criterion(logits, target)   # logits (N, C[, d1[, d2]]), target class indices",
                "    loss.backward()", "",
                "It takes logits and integer targets as nn.CrossEntropyLoss does and applies the",
                "task's transform inside (`inputs`). reduction='mean' divides by the N*d1*d2 elements,",
                "ignored ones included (Eq. 3, as the search trained it; nn.CrossEntropyLoss divides",
                "by the labelled ones only); 'sum' sums; 'none' gives (N, d1, d2), o summed over C;",
                "`weight` (C,) scales each class's o. `raw(yhat, y)` takes the loss inputs themselves."]
    elif kind == "dense":
        doc += [f"    criterion = {class_name}()",
                "    loss = criterion(output, target, weight=None)   # (N, C[, d1[, d2]]); weight (N, C) or the output's shape",
                "    loss.backward()", "",
                "The task's transform is inside (`inputs`): output and target multiplied by weight.",
                "reduction='mean' divides by the N*d1*d2 elements (Eq. 3), 'sum' sums, 'none' gives",
                "(N, d1, d2), o summed over C. `raw(yhat, y)` takes the loss inputs themselves."]
    elif single:
        (branch,) = space.branches
        args = ", ".join(f"{t.name}=..." for t in branch.inputs if t.constant is None)
        doc.append(f"    criterion = {class_name}()\n    loss = criterion({args})\n    loss.backward()")
    else:
        doc.append(f"    criterion = {class_name}()\n    loss = criterion({{branch: {{input: tensor}}}}, ...)\n"
                   "    # or one branch at a time: criterion.branch_loss(name, {input: tensor}); for a\n"
                   "    # torchvision Faster / Mask R-CNN: tasks.det.heads.use_losses(model, criterion.branch_loss)")
    doc += ["", f"Written by gp-losses {__version__}; needs only torch."]
    lines = ['"""' + "\n".join(doc).replace('"""', "'''").rstrip() + '\n"""', "",
             "import torch", "import torch.nn.functional as F", "", "EPS = 1e-12", ""]
    for name in used:
        prim = space.operators.by_name[name]
        lines += ["", f"def {name}({', '.join(prim.args)}):"]
        if prim.doc:
            lines.append(f'    """{prim.doc}"""')
        lines += [f"    return {prim.code}", ""]
    weights = ", ".join(f"{b.name!r}: {b.weight!r}" for b in space.branches)
    inputs = ", ".join(f"{b.name!r}: {tuple(t.name for t in b.inputs if t.constant is None)!r}"
                       for b in space.branches)
    lines += ["", f"class {class_name}(torch.nn.Module):",
              '    """The found loss; see the module docstring for its formula and its inputs."""',
              "", f"    WEIGHTS = {{{weights}}}", f"    INPUTS = {{{inputs}}}", ""]
    for branch, tree in zip(space.branches, loss):
        variables = [t.name for t in branch.inputs if t.constant is None]
        lines.append(f"    def branch_{branch.name}(self, {', '.join(variables)}):")
        lines.append(f'        """Element-wise output o of branch `{branch.name}`."""')
        for t in branch.inputs:
            if t.constant is not None and t.name in tree.input_names():
                lines.append(f"        {t.name} = torch.full_like({variables[0]}, {t.constant!r})")
        lines += [f"        return {_call(tree)[0]}", ""]
    lines += ["    @staticmethod", "    def reduce(o):", '        """Eq. 3: sum(o) / (N * H * W)."""',
              "        if o.dim() != 4:",
              '            raise ValueError(f"loss inputs must be (N, C, H, W) tensors, got shape {tuple(o.shape)}")',
              "        n, _, h, w = o.shape", "        return o.sum() / max(n * h * w, 1)  # no sample: 0", ""]
    if kind:
        (branch,) = space.branches
        variables = [t.name for t in branch.inputs if t.constant is None]
        if variables != ["yhat", "y"]:
            raise InputError(f"a {kind!r} drop-in export needs the branch inputs yhat and y, the task's "
                             f"branch {branch.name!r} has {variables}: give the task no export_inputs "
                             "for the raw form")
        lines += _dropin_lines(kind, branch.name, dropin)
    elif single:
        (branch,) = space.branches
        variables = [t.name for t in branch.inputs if t.constant is None]
        lines += [f"    def forward(self, {', '.join(variables)}):",
                  f"        return self.reduce(self.branch_{branch.name}({', '.join(variables)}))",
                  "", "    raw = forward"]
    else:
        lines += ["    def branch_loss(self, name, inputs):",
                  '        """weight * loss of branch `name` from {input name: tensor} (other inputs ignored)."""',
                  "        branch = getattr(self, 'branch_' + name)",
                  "        return self.WEIGHTS[name] * self.reduce(branch(**{k: inputs[k] for k in self.INPUTS[name]}))",
                  "",
                  "    def forward(self, inputs):",
                  '        """inputs: {branch name: {input name: (N, C, H, W) tensor}}."""',
                  "        total = 0.0", "        for name in self.WEIGHTS:",
                  "            total = total + self.branch_loss(name, inputs[name])",
                  "        return total"]
    return "\n".join(_tidy(lines)) + "\n"


_LABELS = '''
    def __init__(self, weight=None, ignore_index={ignore_index!r}, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {{reduction!r}}")
        self.ignore_index, self.reduction = ignore_index, reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def inputs(self, input, target):
        """(yhat, y), (N, C, H, W): softmax(logits) and one_hot(target), masked where target is ignore_index."""
        if not 2 <= input.dim() <= 4 or tuple(target.shape) != (input.shape[0], *input.shape[2:]):
            raise ValueError(f"expected logits (N, C), (N, C, L) or (N, C, H, W) and class indices of shape "
                             f"(N, ...), got {{tuple(input.shape)}} and {{tuple(target.shape)}}")
        logits = input.reshape(*input.shape, *([1] * (4 - input.dim())))
        labels = target.long().reshape(*target.shape, *([1] * (3 - target.dim())))
        mask = (labels != self.ignore_index)[:, None].to(logits.dtype)
        onehot = F.one_hot(torch.where(labels == self.ignore_index, 0, labels), logits.shape[1])
        return logits.softmax(dim=1) * mask, onehot.permute(0, 3, 1, 2).to(logits.dtype) * mask

    def forward(self, input, target):
        yhat, y = self.inputs(input, target)
        return self._reduce(self.branch_{branch}(yhat, y), tuple(target.shape))
'''

_DENSE = '''
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {{reduction!r}}")
        self.reduction, self.weight = reduction, None

    def inputs(self, output, target, weight=None):
        """(yhat, y), (N, C, H, W): output and target, each multiplied by weight when given."""
        if output.shape != target.shape or not 2 <= output.dim() <= 4:
            raise ValueError(f"expected output and target of one shape (N, C[, d1[, d2]]), got "
                             f"{{tuple(output.shape)}} and {{tuple(target.shape)}}")
        yhat = output.reshape(*output.shape, *([1] * (4 - output.dim())))
        y = target.reshape(*target.shape, *([1] * (4 - target.dim())))
        if weight is None:
            return yhat, y
        w = weight.reshape(*weight.shape, *([1] * (4 - weight.dim()))).to(yhat.dtype)
        return yhat * w, y * w

    def forward(self, output, target, weight=None):
        yhat, y = self.inputs(output, target, weight)
        return self._reduce(self.branch_{branch}(yhat, y), (output.shape[0], *output.shape[2:]))
'''

_REDUCE = '''
    def _reduce(self, o, shape):
        """The reduction asked for; 'mean' is Eq. 3, the loss the search trained with."""
        if self.weight is not None:
            o = o * self.weight.to(o.dtype).view(1, -1, 1, 1)
        if self.reduction == "none":
            return o.sum(dim=1).reshape(shape)
        if self.reduction == "sum":
            return o.sum()
        return self.reduce(o)

    def raw(self, yhat, y):
        """Eq. 3 from the loss inputs themselves, (N, C, H, W) each, as the search computed it."""
        return self.reduce(self.branch_{branch}(yhat, y))
'''


def _dropin_lines(kind: str, branch: str, dropin: Mapping[str, Any]) -> List[str]:
    """`__init__`, `inputs`, `forward`, `_reduce` and `raw` of a drop-in module."""
    body = (_LABELS if kind == "labels" else _DENSE).format(branch=branch, ignore_index=dropin.get("ignore_index"))
    return (body + _REDUCE.format(branch=branch)).strip("\n").splitlines()


def _tidy(lines: List[str]) -> List[str]:
    """No runs of more than two blank lines."""
    out: List[str] = []
    for line in lines:
        if line == "" and len(out) >= 2 and out[-1] == "" and out[-2] == "":
            continue
        out.append(line)
    return out


def load_source(source: str, name: str = "found_loss") -> types.ModuleType:
    """Execute generated source as a module (what importing the written file gives)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def run_loss(run_dir: Union[str, Path], rank: Optional[int] = None) -> tuple:
    """(context, {branch: expr}, hall-of-fame entry) of rank `rank` in a run directory; by
    default the search's pick (rundir.search_pick)."""
    from gp_losses import config as cfg
    from gp_losses.context import build_context
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise InputError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    context = build_context(cfg.load(run / "config.yaml"))
    hall = RunDir(run).hall_of_fame()
    if not hall:
        raise InputError(f"{str(run_dir)!r} has no hall of fame yet: no loss to export")
    rank = rank or search_pick(run)
    if not 1 <= rank <= len(hall):
        raise InputError(f"--rank {rank}: the hall of fame of {str(run_dir)!r} has ranks 1 to {len(hall)}")
    entry = hall[rank - 1]
    return context, entry["expr"], entry


def run_source(run_dir: Union[str, Path], rank: Optional[int] = None) -> str:
    """The standalone module of the rank-`rank` loss of a run (default: the search's pick)."""
    context, expr, entry = run_loss(run_dir, rank)
    rank = entry["rank"]
    picked = RunDir(Path(run_dir)).read_json("final.json", {}).get("pick") == rank
    chosen = " (the search's pick among its finalists: final.md)" if picked else ""
    header = (f"Loss of rank {rank}{chosen} of the search in {Path(run_dir).name}: task `{context.task_cls.name}`, "
              f"metric {context.metric}.\nSearch score {entry['score']:.4f} (proxy training, val split, the "
              "best of its proxy runs: optimistic; `gp-losses retrain` scores it on held-out data).")
    return to_source(context.space, context.space.parse(expr), header, context.task_cls.loss_inputs_doc,
                     dropin=context.task_cls.export_inputs(context.options))


def to_module(source: Union[str, Path, Mapping[str, str]], task: Optional[str] = None,
              rank: Optional[int] = None,
              operators: Sequence[str] = ()) -> Any:
    """A torch.nn.Module computing a loss: `source` is a run directory (its rank-`rank` loss)
    or an expression (one string, or {branch: expression}) of `task`'s branches (without a
    task: one branch with inputs yhat, y, one). The module is built from the same source that
    `gp-losses export` writes."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return load_source(run_source(source, rank)).__dict__[CLASS_NAME]()
    if task:
        from gp_losses.context import build_context, load_run_config

        context = build_context(load_run_config(task, None, [], operators))
        space, doc = context.space, context.task_cls.loss_inputs_doc
        dropin = context.task_cls.export_inputs(context.options)
    else:
        from primitives import operator_set

        space, doc, dropin = SearchSpace(operators=operator_set(operators)), {}, None
    text = to_source(space, space.parse(source if isinstance(source, Mapping) else str(source)),
                     inputs_doc=doc, dropin=dropin)
    return load_source(text).__dict__[CLASS_NAME]()


def formula(run_dir: Union[str, Path], rank: Optional[int] = None, fmt: str = "sympy") -> Dict[str, str]:
    """{branch: simplified formula} of a run's loss, as sympy text or LaTeX (paper Table 8)."""
    from gp_losses.formula import to_latex

    context, expr, _ = run_loss(run_dir, rank)
    exprs = context.space.formulas(context.space.parse(expr))
    return {b: (to_latex(e) if fmt == "latex" else str(e)) for b, e in exprs.items()}
