"""The engine commands: probe, train, show, and `--loss` resolution for multi-branch tasks."""

import json
from types import SimpleNamespace

import pytest

from gp_losses.cli import main, resolve_loss
from gp_losses.errors import InputError
from gp_losses.trees import Branch
from primitives import BOX_INPUTS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_probe_prints_the_protocol_result(capsys):
    code, out, _ = run_cli(capsys, "probe", "--task", "cls", "--loss", "Neg(Mul(y, Log(yhat)))")
    data = json.loads(out)
    assert code == 0 and data["passed"] is True
    branch = data["branches"]["cls"]
    assert branch["gain"] >= 0.6 and len(branch["fingerprint"]) == 5 and branch["steps"] > 0
    code, out, _ = run_cli(capsys, "probe", "--task", "cls", "--loss", "Mul(y, Log(yhat))")
    assert json.loads(out)["branches"]["cls"]["reason"] == "low_gain"


def test_train_a_baseline_and_an_expression(capsys):
    fast = ["--set", "task.options.iterations=40"]
    code, out, _ = run_cli(capsys, "train", "--task", "cls", "--loss", "ce", "--seed", "0", *fast)
    ce = json.loads(out)
    assert code == 0 and ce["status"] == "ok" and ce["loss"] == {"cls": "Neg(Mul(y, Log(yhat)))"}
    assert ce["metrics"]["accuracy"] == ce["score"] > 0.5
    code, out, _ = run_cli(capsys, "train", "--task", "cls", "--loss", "Neg(Square(yhat))", *fast)
    assert json.loads(out)["score"] < 0.3


@pytest.mark.parametrize("argv, fragment", [
    (["probe", "--task", "cls", "--loss", "Log(yhatt)"], "did you mean 'yhat'"),
    (["train", "--task", "cls", "--loss", "cls=Foo(y)"], "'Foo'"),
    (["train", "--task", "cls", "--loss", "reg=ce"], "unknown branch 'reg'"),
    (["train", "--task", "cls", "--metric", "auc", "--loss", "ce"], "task.metric"),
    (["show", "/nonexistent/run"], "not a run directory"),
])
def test_engine_commands_bad_input_exit_2(capsys, argv, fragment):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and fragment in err


def test_show_reads_a_run_directory(tmp_path, capsys):
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished", "evaluations": 3}))
    (tmp_path / "hall_of_fame.json").write_text(json.dumps([{"rank": 1, "score": 0.9}, {"rank": 2, "score": 0.8}]))
    (tmp_path / "logbook.csv").write_text("batch,best\n1,0.8\n2,0.9\n")
    code, out, _ = run_cli(capsys, "show", str(tmp_path), "--top", "1")
    data = json.loads(out)
    assert code == 0 and data["status"]["state"] == "finished"
    assert data["hall_of_fame"] == [{"rank": 1, "score": 0.9}] and data["last_batch"]["best"] == "0.9"


def _two_branch_context():
    task = SimpleNamespace(name="det", branches=(Branch("cls"), Branch("reg", BOX_INPUTS)),
                           baselines={"default": {"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Neg(Log(Mul(i, Inv(u))))"},
                                      "giou": {"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Add(one, Neg(Mul(i, Inv(u))))"}})
    return SimpleNamespace(task_cls=task)


def test_loss_flags_for_a_multi_branch_task():
    ctx = _two_branch_context()
    assert resolve_loss(ctx, ["reg=giou"]) == {"cls": "Neg(Mul(y, Log(yhat)))", "reg": "Add(one, Neg(Mul(i, Inv(u))))"}
    assert resolve_loss(ctx, ["cls=Neg(Mul(y, yhat))"])["reg"] == "Neg(Log(Mul(i, Inv(u))))"
    assert resolve_loss(ctx, ["giou"])["reg"] == "Add(one, Neg(Mul(i, Inv(u))))"
    with pytest.raises(InputError, match="one --loss BRANCH=EXPR per branch"):
        resolve_loss(ctx, ["Neg(Mul(y, yhat))"])
