"""The engine commands: probe, train, show, and `--loss` resolution for multi-branch tasks."""

import json
import os
from types import SimpleNamespace

import pytest

from gp_losses.cli import main
from gp_losses.commands import resolve_loss
from gp_losses.core.errors import InputError
from gp_losses.contract import Branch
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


def test_show_reads_a_run_directory_with_numbers_as_numbers(tmp_path, capsys):
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished", "evaluations": 3}))
    (tmp_path / "hall_of_fame.json").write_text(json.dumps([{"rank": 1, "score": 0.9}, {"rank": 2, "score": 0.8}]))
    (tmp_path / "baselines.json").write_text(json.dumps({"ce": {"score": 0.95, "status": "ok"}}))
    (tmp_path / "logbook.csv").write_text("batch,best,pop_mean,note\n1,0.8,nan,\n2,0.9,0.5,x\n")
    code, out, _ = run_cli(capsys, "show", str(tmp_path), "--top", "1")
    data = json.loads(out)
    assert code == 0 and data["status"]["state"] == "finished"
    assert data["hall_of_fame"] == [{"rank": 1, "score": 0.9}]
    assert data["last_batch"] == {"batch": 2, "best": 0.9, "pop_mean": 0.5, "note": "x"}
    assert data["baselines"]["ce"]["score"] == 0.95


def test_show_counts_each_branchs_candidates_from_the_evaluations_log(tmp_path, capsys):
    """Per branch: explored = rejected + passed, where an individual's branch passed unless
    the offspring copied it from its parent (copies are not candidates)."""
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished"}))
    records = [{"index": None, "branch": "a", "reason": "low_gain"},
               {"index": None, "branch": "a", "reason": "no_target"},
               {"index": None, "branch": "b", "reason": "low_gain"},
               {"index": 3, "expr": {"a": "x", "b": "y"}, "status": "ok",
                "origin": [{"op": "init"}, {"op": "init"}]},
               {"index": 4, "expr": {"a": "x", "b": "z"}, "status": "reused",
                "origin": [{"op": "copy"}, {"op": "mutate"}]}]
    (tmp_path / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, _ = run_cli(capsys, "show", str(tmp_path))
    assert code == 0 and json.loads(out)["branches"] == {
        "a": {"explored": 3, "passed": 1, "rejected": {"no_target": 1, "low_gain": 1}},
        "b": {"explored": 3, "passed": 2, "rejected": {"low_gain": 1}}}


def test_show_reports_a_run_whose_owner_is_gone_as_stale(tmp_path, capsys):
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    for pid, state in ((os.getpid(), "running"), (gone.pid, "stale")):
        (tmp_path / "status.json").write_text(json.dumps({"state": "running", "host": socket.gethostname(),
                                                          "pid": pid}))
        code, out, _ = run_cli(capsys, "show", str(tmp_path))
        assert code == 0 and json.loads(out)["status"]["state"] == state


def test_version_and_the_list_of_tasks(capsys):
    from gp_losses import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"gp-losses {__version__}"
    code, out, _ = run_cli(capsys, "tasks")
    tasks = {t["name"]: t for t in json.loads(out)}
    assert code == 0 and set(tasks) >= {"cls", "pose"}
    assert tasks["pose"]["branches"] == [{"name": "heatmap", "inputs": ["yhat", "y", "one"], "weight": 1.0}]
    assert tasks["pose"]["metrics"][0] == "ap" and "mse" in tasks["pose"]["baselines"]
    assert tasks["cls"]["config"] == "runs/cls.yaml"
    assert tasks["cls"]["splits"] == tasks["pose"]["splits"] == ["train", "val", "test"]
    assert tasks["seg"]["python_losses"] == {"seg": ["lovasz", "ssim", "wce"]} and tasks["pose"]["python_losses"] == {}


USER_TASK = """
from tasks.cls import DigitsTask

class MyDigits(DigitsTask):
    \"\"\"Digits, as a user's own task.\"\"\"
    name = "mydigits"
"""
USER_OPS = """
from primitives import Primitive
Cube = Primitive("Cube", 1, lambda x: x * x * x, lambda a: a ** 3)
"""


def test_user_modules_import_from_the_current_directory_with_the_console_script(tmp_path):
    """`gp-losses` (a console script: the current directory is not on sys.path) finds the
    user's task and operators there, for train, probe and search alike."""
    import shutil
    import subprocess
    import sys

    script = shutil.which("gp-losses", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the gp-losses console script is not installed beside this Python")
    (tmp_path / "mytask.py").write_text(USER_TASK)
    (tmp_path / "myops.py").write_text(USER_OPS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    common = ["--task", "mytask:MyDigits", "--operators", "myops:Cube", "--set", "task.options.iterations=20"]

    def gp_losses(*argv):
        done = subprocess.run([script, *argv], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    trained = json.loads(gp_losses("train", *common, "--loss", "Neg(Mul(y, Log(Cube(yhat))))"))
    assert trained["status"] == "ok" and trained["loss"] == {"cls": "Neg(Mul(y, Log(Cube(yhat))))"}
    probed = json.loads(gp_losses("probe", *common, "--loss", "Square(Add(Cube(yhat), Neg(y)))"))
    assert probed["task"] == "mydigits" and probed["branches"]["cls"]["steps"] > 0
    gp_losses("search", *common, "--evaluations", "2", "--set", "search.population_init=2",
              "--set", "protocol.steps=100", "--set", "protocol.lr=0.005", "--set", "proxy.isolate=false",
              "--out", "run")  # sandboxes importing a user's module: docs/your-task.md's test
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "myops:Cube" in config and "mytask:MyDigits" in config
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"


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
    with pytest.raises(InputError, match="one BRANCH=EXPR per branch"):
        resolve_loss(ctx, ["Neg(Mul(y, yhat))"])
