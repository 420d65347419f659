"""Export: a found loss as a standalone torch module, checked in a fresh interpreter that
cannot import the project against the compiled tree the search trains with."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gp_losses.cli import main
from gp_losses.context import build_context, load_run_config
from gp_losses.core.errors import InputError
from gp_losses.export import to_module, to_source
from search_helpers import LOAD_ALONE, ROOT

EVERY_OPERATOR = ("Add(MeanC(MinPool(Tanh(Mul(Sqrt(yhat), Inv(y))))), "
                  "Neg(Abs(Log(Add(Exp(Square(MaxPool(yhat))), MeanNHW(Mul(y, one)))))))")
FOUND_POSE = "Square(Add(Neg(yhat), Square(Mul(Sqrt(Sqrt(MaxPool(Add(one, Exp(y))))), y))))"
"""The best loss of a `make search` run (docs/tasks.md)."""

CHECK = LOAD_ALONE + r"""
inputs = torch.load(sys.argv[2])
tensors = {b: {k: v.clone().requires_grad_(k == "yhat") for k, v in d.items()} for b, d in inputs.items()}
criterion = module.FoundLoss()
if len(tensors) == 1:
    (branch,) = tensors.values()
    value = criterion.raw(**branch)  # the loss inputs themselves (forward takes logits, targets)
else:
    value = criterion(tensors)
value.backward()
torch.save({"value": value.detach(), "grads": {b: d["yhat"].grad for b, d in tensors.items()}}, sys.argv[3])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("gp_losses", "primitives", "tasks"))))
"""


def _inputs(task_name, seed=0):
    """Random loss inputs shaped as the task gives them: softmax/one-hot or heatmaps."""
    gen = torch.Generator().manual_seed(seed)
    if task_name == "cls":
        yhat = torch.randn(8, 10, 1, 1, generator=gen, dtype=torch.float64).softmax(dim=1)
        y = torch.nn.functional.one_hot(torch.randint(0, 10, (8,), generator=gen), 10)
        return {"cls": {"yhat": yhat, "y": y.double()[:, :, None, None]}}
    yhat = torch.randn(3, 17, 8, 6, generator=gen, dtype=torch.float64)
    y = torch.rand(3, 17, 8, 6, generator=gen, dtype=torch.float64)
    return {"heatmap": {"yhat": yhat, "y": y}}


@pytest.mark.parametrize("task_name,expr", [("cls", "Neg(Mul(y, Log(yhat)))"), ("cls", EVERY_OPERATOR),
                                            ("pose", FOUND_POSE), ("pose", EVERY_OPERATOR)])
def test_exported_file_matches_the_compiled_tree_without_the_project(tmp_path, task_name, expr):
    context = build_context(load_run_config(task_name, None, []))
    space = context.space
    (branch,) = space.branches
    path = tmp_path / "found_loss.py"
    path.write_text(to_source(space, space.parse(expr), "test", context.task_cls.loss_inputs_doc,
                              dropin=context.task_cls.export_inputs(context.options)))
    inputs = _inputs(task_name)
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHECK, str(path), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    out = torch.load(tmp_path / "out.pt")

    yhat = inputs[branch.name]["yhat"].clone().requires_grad_(True)
    value = space.compile(space.parse(expr))({branch.name: {"yhat": yhat, "y": inputs[branch.name]["y"]}})
    value.backward()
    assert torch.isfinite(value) and value.item() != 0
    assert torch.equal(out["value"], value.detach())  # the same expressions: bit for bit
    assert torch.equal(out["grads"][branch.name], yhat.grad)
    assert yhat.grad.abs().sum() > 0


def test_to_module_from_an_expression_and_a_wrong_shape():
    module = to_module("Neg(Mul(y, Log(yhat)))", task="cls")
    logits = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    yhat = logits.softmax(dim=1)[:, :, None, None]
    y = torch.nn.functional.one_hot(labels, 10).float()[:, :, None, None]
    expected = torch.nn.functional.cross_entropy(logits, labels)  # ce with eps: equal to 1e-6
    assert module.raw(yhat, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert module(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert isinstance(module, torch.nn.Module)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        module.raw(yhat[:, :, 0, 0], y[:, :, 0, 0])
    with pytest.raises(ValueError, match=r"got \(16, 10\) and \(16, 3\)"):
        module(logits, labels[:, None].repeat(1, 3))
    raw = to_module("Neg(Mul(y, Log(yhat)))")  # no task: forward takes the loss inputs
    assert raw(yhat=yhat, y=y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_an_operator_without_code_cannot_be_exported():
    import dataclasses

    from gp_losses.space import SearchSpace
    from primitives import TABLE1, OperatorSet

    cube = dataclasses.replace(TABLE1[8], name="Cube", torch_fn=lambda x: x * x * x, code="")
    space = SearchSpace(operators=OperatorSet(list(TABLE1) + [cube]))
    with pytest.raises(InputError, match="'Cube' has no `code`"):
        to_source(space, space.parse("Cube(Add(yhat, Neg(y)))"))


def test_an_operator_whose_code_differs_from_its_function_is_refused():
    import dataclasses

    from gp_losses.core.errors import OperatorError
    from primitives import TABLE1, OperatorSet

    wrong = dataclasses.replace(TABLE1[5], name="LogWrong", code="torch.log(torch.abs(x) + EPS)")
    with pytest.raises(OperatorError, match="does not compute what its torch_fn does"):
        OperatorSet(list(TABLE1) + [wrong])


def test_export_cli_writes_the_file_and_the_formula(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(open(os.path.join(ROOT, "runs", "cls.yaml")).read())
    (run / "hall_of_fame.json").write_text(json.dumps([
        {"rank": 1, "score": 0.97, "expr": {"cls": "Neg(Mul(y, Log(yhat)))"}, "formula": {}, "metrics": {}}]))
    assert main(["export", str(run), "-o", str(tmp_path / "loss.py")]) == 0
    text = (tmp_path / "loss.py").read_text()
    assert "class FoundLoss(torch.nn.Module)" in text and "softmax" in text and "EPS = 1e-12" in text
    assert "import gp_losses" not in text and "from gp_losses" not in text
    capsys.readouterr()
    assert main(["export", str(run), "--format", "sympy"]) == 0
    assert capsys.readouterr().out.strip() == "-y*log(yhat)"
    assert main(["export", str(run), "--rank", "2"]) == 2
    assert "ranks 1 to 1" in capsys.readouterr().err


def test_the_training_loop_in_the_docs_runs(capsys):
    import math
    import re

    text = open(os.path.join(ROOT, "docs", "export.md")).read()
    heatmaps, labels = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(heatmaps, "docs/export.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("loss after 5 steps: ") and math.isfinite(float(printed.split(": ")[1]))
    exec(compile(labels, "docs/export.md", "exec"), {})
    found, reference = re.fullmatch(r"found (\S+) = torch's x labelled share (\S+)\n", capsys.readouterr().out).groups()
    assert found == reference and math.isfinite(float(found))


def _ce_dropin_cases():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, 5, 7, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 6, (4, 5, 7), generator=gen)
    target[0, :2] = 255
    target[3, :, 4:] = 255
    yield "seg", 255, logits, target
    logits = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 10, (16,), generator=gen)
    target[[2, 9]] = -100  # samples left out, as torch's default ignore_index does
    yield "cls", -100, logits, target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_exported_ce_is_torch_cross_entropy_up_to_eq3_normalization(reduction):
    """FoundLoss()(logits, target) of the ce tree is F.cross_entropy(..., ignore_index): 'sum'
    and 'none' equal; 'mean' divides by all N*H*W elements (Eq. 3) where torch divides by the
    labelled ones, a factor labelled / (N*H*W) (1 without ignored elements)."""
    import torch.nn.functional as F

    for task, ignore, logits, target in _ce_dropin_cases():
        module = to_module("Neg(Mul(y, Log(yhat)))", task=task)
        assert module.ignore_index == ignore
        criterion = type(module)(reduction=reduction)
        ours = criterion(logits, target)
        theirs = F.cross_entropy(logits, target, ignore_index=ignore, reduction=reduction)
        if reduction == "mean":
            labelled = int((target != ignore).sum())
            theirs = theirs * labelled / target.numel()
            assert labelled < target.numel()  # ignored elements present: the factor is not 1
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-9)  # Log's eps: 1e-12
        weight = torch.rand(logits.shape[1], dtype=torch.float64) + 0.5
        weighted = type(module)(weight=weight, reduction="none")(logits, target)
        unweighted = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore, reduction="none")
        assert torch.allclose(weighted, unweighted, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("task_name", ["cls", "seg", "pose", "template_tasks:Squares", "template_tasks:Peaks"])
def test_the_dropin_equals_the_compiled_tree_on_the_tasks_own_inputs(task_name):
    """The drop-in applies the task's transform (softmax and one-hot with the ignore mask;
    heatmaps times weights) exactly as the search did: values and gradients equal."""
    context = build_context(load_run_config(task_name, None, []))
    task, space = context.make_task(), context.space
    (branch,) = space.branches
    expr = EVERY_OPERATOR if task_name != "pose" else FOUND_POSE
    module = to_module(expr, task=task_name)
    gen = torch.Generator().manual_seed(0)
    if task_name == "cls":
        outputs, target = torch.randn(8, 10, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        targets, args = target, (target,)
    elif task_name in ("seg", "template_tasks:Squares"):
        classes = 6 if task_name == "seg" else 3
        outputs = torch.randn(2, classes, 9, 8, generator=gen)
        target = torch.randint(0, classes, (2, 9, 8), generator=gen)
        target[:, :2] = 255
        targets, args = target, (target,)
    elif task_name == "pose":
        outputs, heat = torch.randn(3, 17, 8, 6, generator=gen), torch.rand(3, 17, 8, 6, generator=gen)
        weights = (torch.rand(3, 17, generator=gen) > 0.3).float()
        targets, args = {"heatmaps": heat, "weights": weights}, (heat, weights)
    else:
        outputs, heat = torch.randn(3, 1, 8, 6, generator=gen), torch.rand(3, 1, 8, 6, generator=gen)
        weights = torch.tensor([[1.0], [0.0], [1.0]])
        targets, args = (heat, weights), (heat, weights)
    mine = outputs.clone().requires_grad_(True)
    value = module(mine, *args)
    value.backward()
    theirs = outputs.clone().requires_grad_(True)
    four = theirs.reshape(*theirs.shape, *([1] * (4 - theirs.dim())))
    expected = space.compile(space.parse(expr))({branch.name: task.loss_inputs(branch.name, four, targets)})
    expected.backward()
    assert torch.isfinite(value) and value.item() != 0
    assert torch.equal(value.detach(), expected.detach())
    assert torch.equal(mine.grad, theirs.grad) and mine.grad.abs().sum() > 0
