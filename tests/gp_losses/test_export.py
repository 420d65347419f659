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
from search_helpers import ROOT

EVERY_OPERATOR = ("Add(MeanC(MinPool(Tanh(Mul(Sqrt(yhat), Inv(y))))), "
                  "Neg(Abs(Log(Add(Exp(Square(MaxPool(yhat))), MeanNHW(Mul(y, one)))))))")
FOUND_POSE = "Square(Add(Neg(yhat), Square(Mul(Sqrt(Sqrt(MaxPool(Add(one, Exp(y))))), y))))"
"""The best loss of a `make search` run (docs/tasks.md)."""

CHECK = r"""
import importlib.abc, importlib.util, json, sys
import torch

class Refuse(importlib.abc.MetaPathFinder):  # the project must not be needed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("gp_losses", "primitives", "tasks"):
            raise ImportError(f"the exported file imported {name}")

sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("found", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
inputs = torch.load(sys.argv[2])
tensors = {b: {k: v.clone().requires_grad_(k == "yhat") for k, v in d.items()} for b, d in inputs.items()}
criterion = module.FoundLoss()
if len(tensors) == 1:
    (branch,) = tensors.values()
    value = criterion(**branch)
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
    path.write_text(to_source(space, space.parse(expr), "test", context.task_cls.loss_inputs_doc))
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
    assert module(yhat, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert isinstance(module, torch.nn.Module)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        module(yhat[:, :, 0, 0], y[:, :, 0, 0])


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
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(block, "docs/export.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("loss after 5 steps: ") and math.isfinite(float(printed.split(": ")[1]))
