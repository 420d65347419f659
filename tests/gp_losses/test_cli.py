"""The search-space commands: JSON on stdout, exit code 2 with a named token on bad input."""

import json
import os
import shlex
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from gp_losses.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_formula_prints_expr_sympy_latex_height_size(capsys):
    code, out, _ = run_cli(capsys, "formula", "Neg(Mul(y, Log(yhat)))")
    data = json.loads(out)
    assert code == 0
    assert data == {"expr": "Neg(Mul(y, Log(yhat)))", "sympy": "-y*log(yhat)",
                    "latex": data["latex"], "height": 3, "size": 5}
    assert "\\log" in data["latex"]


def test_formula_at_a_point(capsys):
    code, out, _ = run_cli(capsys, "formula", "Neg(Mul(y, Log(yhat)))", "--at", "yhat=0.5", "--at", "y=1")
    data = json.loads(out)
    assert data["value"] == pytest.approx(0.6931471805599453, abs=1e-9)
    assert data["grad"] == pytest.approx(-2.0, abs=1e-9) and data["grad_wrt"] == "yhat"


def test_sample_is_seeded_and_respects_depth(capsys):
    _, first, _ = run_cli(capsys, "sample", "--n", "20", "--seed", "3", "--depth", "2")
    _, again, _ = run_cli(capsys, "sample", "--n", "20", "--seed", "3", "--depth", "2")
    _, other, _ = run_cli(capsys, "sample", "--n", "20", "--seed", "4", "--depth", "2")
    lines = first.splitlines()
    assert len(lines) == 20 and first == again and first != other
    from gp_losses.space import SearchSpace

    space = SearchSpace()
    assert all(space.parse(line)[0].height == 2 for line in lines)


def test_sample_box_inputs(capsys):
    _, out, _ = run_cli(capsys, "sample", "--n", "30", "--branch-inputs", "i,u,e,one")
    names = set(out.replace("(", " ").replace(")", " ").replace(",", " ").split())
    assert names & {"i", "u", "e"} and not names & {"yhat", "y"}


def test_mutate_prints_json_lines_with_the_operation(capsys):
    code, out, _ = run_cli(capsys, "mutate", "Neg(Mul(y, Log(yhat)))", "--n", "50", "--seed", "1")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(records) == 50
    assert {r["op"] for r in records} == {"copy", "reinit", "mutate"}
    for r in records:
        assert set(r) == {"op", "steps", "expr"}
        assert len(r["steps"]) == (2 if r["op"] == "mutate" else 0)
        if r["op"] == "copy":
            assert r["expr"] == "Neg(Mul(y, Log(yhat)))"


@pytest.mark.parametrize("argv, fragment", [
    (["formula", "Foo(yhat)"], "'Foo'"),
    (["formula", "Mul(yhat)"], "Mul takes 2 arguments"),
    (["formula", "Log(z)"], "'z'"),
    (["formula", "Log(yhat))(("], "unexpected ')'"),
    (["formula", "1 + 1"], "'1'"),
    (["formula", "Log(yhat)", "--at", "yhat"], "NAME=NUMBER"),
    (["formula", "Log(yhat)", "--at", "yhat=abc"], "NAME=NUMBER"),
    (["mutate", "Neg(Mul(y,"], "end of input"),
    (["sample", "--branch-inputs", "yhat,why"], "'why'"),
    (["sample", "--operators", "nonexistent_pkg.ops:Cube"], "cannot import module"),
])
def test_bad_input_exits_2_naming_the_token(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert fragment in err and err.startswith("gp-losses: error:")


@pytest.mark.parametrize("argv", [["sample", "--n", "0"], ["sample", "--n", "x"], ["nonsense"]])
def test_bad_flags_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_user_operator_from_the_command_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_ops.py").write_text(textwrap.dedent("""
        from primitives import Primitive
        Cube = Primitive("Cube", 1, lambda x: x * x * x, lambda a: a ** 3)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run_cli(capsys, "formula", "Cube(yhat)", "--operators", "cli_ops:Cube",
                           "--at", "yhat=2")
    data = json.loads(out)
    assert code == 0 and data["sympy"] == "yhat**3" and data["value"] == pytest.approx(8.0)


def _subprocess(*argv):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_module_entry_point_and_exit_code():
    ok = _subprocess("-m", "gp_losses", "formula", "Square(yhat)")
    assert ok.returncode == 0 and json.loads(ok.stdout)["sympy"] == "yhat**2"
    bad = _subprocess("-m", "gp_losses", "formula", "Sqaure(yhat)")
    assert bad.returncode == 2 and "did you mean 'Square'" in bad.stderr


def test_main_script_reports_an_unknown_task_with_exit_2(tmp_path):
    result = _subprocess("gp_losses/main.py", "--task", "posee", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "unknown task 'posee'" in result.stderr
    assert "did you mean 'pose'" in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["-v", "sample"], ["sample", "-v"], ["sample", "--n", "2", "--verbose"]])
def test_verbose_before_or_after_the_command(argv):
    from gp_losses.cli import build_parser

    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args(["sample"]).verbose is False


@pytest.mark.parametrize("argv", [["-q", "tasks"], ["tasks", "-q"], ["tasks", "--quiet"]])
def test_quiet_before_or_after_the_command(argv):
    from gp_losses.cli import build_parser

    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False
    assert build_parser().parse_args(["tasks"]).quiet is False


def test_quiet_leaves_warnings_only(capsys, monkeypatch):
    import logging

    from gp_losses.cli import run

    monkeypatch.setenv("TQDM_DISABLE", "")  # recorded, so that the teardown restores the environment
    monkeypatch.delenv("TQDM_DISABLE")
    logging.getLogger().handlers.clear()  # basicConfig acts only on a root logger without handlers

    def speak(args):
        logging.getLogger("gp_losses").info("an info line")
        logging.getLogger("gp_losses").warning("a warning line")
        return 0

    assert run(speak, SimpleNamespace(quiet=True, verbose=False)) == 0
    err = capsys.readouterr().err
    assert "a warning line" in err and "an info line" not in err
    assert os.environ["TQDM_DISABLE"] == "1"
    logging.getLogger().handlers.clear()


def test_config_prints_the_resolved_configuration_and_reads_back(capsys, tmp_path):
    import yaml

    code, out, _ = run_cli(capsys, "config", "--task", "cls", "--set", "search.batch=4",
                           "--set", "task.options.iterations=50", "-q")
    data = yaml.safe_load(out)
    assert code == 0 and data["search"]["batch"] == 4
    assert data["task"]["metric"] == "accuracy"                    # the task's first, resolved
    assert data["task"]["options"]["iterations"] == 50              # --set over runs/cls.yaml
    assert data["task"]["options"]["lr"] == 0.1                     # runs/cls.yaml over the code's default
    assert data["task"]["options"]["hidden"] == 32                  # the code's default, filled in
    (tmp_path / "printed.yaml").write_text(out)
    again = run_cli(capsys, "config", "--config", str(tmp_path / "printed.yaml"))[1]
    assert yaml.safe_load(again) == data                            # the printout is a config that means itself


@pytest.mark.parametrize("argv, fragment", [
    (["config", "--task", "cls", "--set", "search.bacth=2"], "unknown config key 'search.bacth'"),
    (["config", "--task", "cls", "--set", "task.options.iterations=0"], "task.options.iterations"),
    (["config", "--task", "cls", "--set", "task.metric=miou"], "has no metric 'miou'"),
    (["config", "--task", "clss"], "unknown task 'clss'"),
    (["config"], "give --task NAME"),
])
def test_config_refuses_bad_input_with_exit_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and fragment in err


def test_every_subcommand_help_ends_with_its_example(capsys):
    from gp_losses.cli import EXAMPLES, build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(EXAMPLES)
    for name, sub in commands.items():
        text = sub.format_help()
        assert text.rstrip().endswith(EXAMPLES[name][-1]), name
        for line in EXAMPLES[name]:
            assert shlex.split(line)[:2] == ["gp-losses", name], line
            parser.parse_args(shlex.split(line)[1:])  # a valid command line


@pytest.mark.parametrize("name", ["tasks", "formula", "sample", "mutate", "config", "probe"])
def test_the_help_examples_that_need_no_run_directory_run(capsys, name):
    from gp_losses.cli import EXAMPLES

    for line in EXAMPLES[name]:
        code, out, err = run_cli(capsys, *shlex.split(line)[1:])
        assert code == 0 and out.strip(), (line, err[-1000:])


@pytest.mark.parametrize("flags, count", [([], None), (["--workers", "3"], "3")])
def test_a_hostfile_search_starts_scoop_with_the_hostfiles_counts(tmp_path, monkeypatch, capsys, flags, count):
    import gp_losses.cluster as cluster

    hosts = tmp_path / "hosts"
    hosts.write_text("node1 4\nnode2 4\n")
    started = []

    class FakeLauncher:  # SCOOP is not started: the command is what is checked
        def __init__(self, command, **kwargs):
            started.append(command)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(cluster.subprocess, "Popen", FakeLauncher)
    code = main(["search", "--task", "cls", "--hostfile", str(hosts), "--out", str(tmp_path / "run"), *flags])
    (command,) = started
    assert command[1:3] == ["-m", "scoop"] and command[command.index("--hostfile") + 1] == str(hosts)
    assert ("-n" in command) == (count is not None)
    if count:
        assert command[command.index("-n") + 1] == count
    assert code == 1  # nothing ran, so no status.json: a failed run, never a finished one


def test_a_missing_hostfile_exits_2(tmp_path, capsys):
    code, out, err = run_cli(capsys, "search", "--task", "cls", "--hostfile", str(tmp_path / "nope"),
                             "--out", str(tmp_path / "run"))
    assert code == 2 and "--hostfile" in err and "no such file" in err
