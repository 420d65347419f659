"""The Python API: gp_losses.search with a template task (in-process, sandboxed, and under
SCOOP started for the user), the result object, load_run, overrides, and a task defined
where no fresh interpreter can import it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gp_losses
import template_tasks as tt
from gp_losses.api import SearchResult, to_overrides
from gp_losses.core.errors import InputError
from gp_losses.context import load_run_config
from search_helpers import LOAD_ALONE, ROOT, lines, status

QUICK = {"search": {"population_init": 4, "batch": 2}, "protocol": {"steps": 100, "lr": 0.005},
         "final": {"top": 0}, "search__plot": False}

STANDALONE = LOAD_ALONE + r"""
batch = torch.load(sys.argv[2])
logits = batch["logits"].requires_grad_(True)
value = module.FoundLoss()(logits, batch["target"])
value.backward()
torch.save({"value": value.detach(), "grad": logits.grad}, sys.argv[3])
"""


def test_overrides_from_keyword_arguments():
    assert to_overrides({"evaluations": 4, "seed": 2, "metric": "miou", "proxy__timeout_s": 60,
                         "search": {"batch": 2, "operators": ["m:Op"]}, "retrain__options": {"iterations": 9}}) == [
        "search.evaluations=4", "seed=2", 'task.metric="miou"', "proxy.timeout_s=60", "search.batch=2",
        'search.operators=["m:Op"]', "retrain.options.iterations=9"]
    sets = to_overrides({"seed_losses": ["ce", "Neg(Mul(y, yhat))"], "fidelity": {"rungs": [{"iterations": 900}]}})
    assert sets == ['search.seed_losses=["ce", "Neg(Mul(y, yhat))"]', 'fidelity.rungs=[{"iterations": 900}]']
    config = load_run_config("cls", None, sets)  # read back as the config keys they name
    assert config.search.seed_losses == ("ce", "Neg(Mul(y, yhat))")
    assert config.fidelity.rungs == ({"iterations": 900},)
    sets = to_overrides({"objectives": ["miou", "bf1:max"]})
    assert load_run_config("seg", None, sets).search.objectives == ("miou", "bf1:max")


def test_search_with_a_template_returns_a_result_that_exports_retrains_and_reloads(tmp_path):
    result = gp_losses.search(tt.Digits, out=tmp_path / "run", evaluations=4, proxy__isolate=False, **QUICK)
    assert isinstance(result, SearchResult) and result.status["state"] == "finished"
    assert result.pick == result.hall_of_fame[0] and set(result.pick["expr"]) == {"labels"}
    trained = [r for r in lines(result.run_dir) if "eval" in r]
    assert len(trained) == 4 and all(r["status"] == "ok" for r in trained)
    criterion = result.export(tmp_path / "found_loss.py")
    assert isinstance(criterion, torch.nn.Module) and criterion.ignore_index == -100

    # the written file, in a fresh interpreter that cannot import the project, equals the tree
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 10, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    torch.save({"logits": logits, "target": target}, tmp_path / "batch.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(tmp_path / "found_loss.py"),
                           str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = torch.load(tmp_path / "out.pt")
    from gp_losses.context import build_context
    from gp_losses import config as cfg

    context = build_context(cfg.load(result.run_dir / "config.yaml"))
    mine = logits.clone().requires_grad_(True)
    task = context.make_task()
    tree = context.space.compile(context.space.parse(result.pick["expr"]))
    value = tree({"labels": task.loss_inputs("labels", mine[:, :, None, None], target)})
    value.backward()
    assert torch.equal(out["value"], value.detach()) and torch.equal(out["grad"], mine.grad)

    again = gp_losses.load_run(result.run_dir)
    assert again.hall_of_fame == result.hall_of_fame and "finished" in repr(again)
    summary = again.retrain(top=1, seeds=1, proxy__isolate=False)  # no retrain.options: the proxy schedule, on test
    assert summary["split"] == "test" and summary["schedule"] == "proxy"
    assert (result.run_dir / "retrain" / "report.md").is_file()


def test_an_instance_gives_its_options_and_a_bad_override_is_refused(tmp_path):
    task = tt.Digits(tt.Digits.Options(iterations=20), metric="miou")
    result = gp_losses.search(task, out=tmp_path / "run", evaluations=2, proxy__isolate=False, **QUICK)
    config = (result.run_dir / "config.yaml").read_text()
    assert "iterations: 20" in config and "metric: miou" in config
    with pytest.raises(InputError, match="search.evaluatons"):
        gp_losses.search(tt.Digits, out=tmp_path / "bad", search__evaluatons=3)
    with pytest.raises(InputError, match="workers: expected an integer >= 1"):
        gp_losses.search(tt.Digits, workers=0)
    assert not (tmp_path / "bad").exists()


def test_bad_template_parts_exit_2_at_setup_before_any_candidate(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    done = subprocess.run([sys.executable, "-m", "gp_losses", "search", "--task", "template_tasks:StringMetric",
                           "--out", str(tmp_path / "run"), "--evaluations", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "metric 'words' returned 'high' (str)" in done.stderr and "Traceback" not in done.stderr
    assert status(tmp_path / "run")["state"] == "failed" and lines(tmp_path / "run") == []
    for name in ("NoClassDim", "WrongShapes", "FloatTargets", "NotPairs"):
        with pytest.raises(gp_losses.api.GpLossesError) as caught:
            gp_losses.search(getattr(tt, name), out=tmp_path / name, evaluations=2, proxy__isolate=False)
        assert caught.value.exit_code == 2 and lines(tmp_path / name) == []


def test_a_task_defined_in_main_searches_in_process_only(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import gp_losses
        from gp_losses.core.errors import InputError
        from template_tasks import digits, mlp

        class Mine(gp_losses.LabelTask):
            name = "mine"
            data = {{"train": digits("train"), "val": digits("val")}}
            Options = gp_losses.LabelTask.with_options(iterations=20)

            def model(self):
                return mlp()

        try:
            gp_losses.search(Mine, workers=2)
        except InputError as exc:
            refused = str(exc)
        result = gp_losses.search(Mine, out=sys.argv[1], evaluations=2, final={{"top": 0}},
                                  search={{"population_init": 4}}, protocol={{"steps": 100}})
        print(json.dumps([refused, result.status["state"], len(result.hall_of_fame)]))
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    refused, state, hall = json.loads(done.stdout.strip().splitlines()[-1])
    assert "cannot import it" in refused and "workers=1" in refused
    assert state == "finished" and hall == 2
    assert "isolate: false" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("state, raised", [
    ({"state": "finished"}, None),
    ({"state": "failed", "reason": "RuntimeError: boom", "exit_code": 1}, "RunFailed"),
    ({"state": "failed", "reason": "task setup: bad data", "exit_code": 2}, "InputError"),
    (None, "RunFailed"),  # the launcher ended before the run wrote its status
])
def test_workers_start_scoop_with_the_search_and_read_how_it_ended(tmp_path, monkeypatch, state, raised):
    """The command gp_losses.search(workers=2) starts, and what it makes of status.json. (Real
    SCOOP runs: tests/test_packaging.py from a wheel; tests/gp_losses/test_resume.py with a
    task module of the tests' own, against a serial run.)"""
    import gp_losses.cluster as cluster
    from gp_losses.core.errors import RunFailed

    started = []

    class FakeLauncher:
        def __init__(self, command, env=None, **kwargs):
            started.append((command, env))
            out = command[command.index("--out") + 1]
            if state is not None:
                (tmp_path / "run").mkdir(exist_ok=True)
                (tmp_path / "run" / "status.json").write_text(json.dumps(state))
            assert out == str(tmp_path / "run")

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(cluster.subprocess, "Popen", FakeLauncher)
    errors = {"RunFailed": RunFailed, "InputError": InputError}
    if raised:
        with pytest.raises(errors[raised], match="failed"):
            gp_losses.search(tt.Digits, out=tmp_path / "run", evaluations=4, workers=2, **QUICK)
    else:
        result = gp_losses.search(tt.Digits, out=tmp_path / "run", evaluations=4, workers=2, **QUICK)
        assert result.run_dir == tmp_path / "run"
    ((command, env),) = started
    assert command[1:5] == ["-m", "scoop", "-n", "2"] and command[5].endswith("main.py")
    assert command[command.index("--task") + 1] == "template_tasks:Digits"
    sets = [command[i + 1] for i, a in enumerate(command) if a == "--set"]
    assert {"search.evaluations=4", "search.population_init=4", "search.batch=2", "protocol.steps=100"} <= set(sets)
    assert os.path.dirname(tt.__file__) in env["PYTHONPATH"].split(os.pathsep)  # workers import it


def test_a_template_task_by_its_factory_goes_through_every_command(tmp_path, capsys):
    """`--task module:factory` with probe, train, search, resume, show, retrain and export."""
    from gp_losses.cli import main

    task = ["--task", "template_tasks:make_digits"]
    fast = ["--set", "search.population_init=2", "--set", "search.batch=2", "--set", "protocol.steps=100",
            "--set", "protocol.lr=0.005", "--set", "search.plot=false", "--set", "proxy.isolate=false"]

    def command(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert code == 0, err[-2000:]
        return out

    probed = json.loads(command("probe", *task, "--loss", "ce"))
    assert probed["task"] == "digits" and probed["branches"]["labels"]["passed"] is True
    trained = json.loads(command("train", *task, "--loss", "ce", "--seed", "1"))
    assert trained["status"] == "ok" and 0.5 < trained["metrics"]["accuracy"] <= 1
    run = tmp_path / "run"
    command("search", *task, *fast, "--evaluations", "2", "--seed", "0", "--out", str(run))
    command("search", "--resume", str(run), "--evaluations", "4")
    shown = json.loads(command("show", str(run)))
    assert shown["status"]["state"] == "finished" and shown["status"]["evaluations"] == 4
    summary = json.loads(command("retrain", str(run), "--schedule", "proxy", "--top", "1", "--seeds", "1",
                                 "--set", "proxy.isolate=false"))
    assert summary["split"] == "test" and [r["name"] for r in summary["rows"]] == ["#1", "ce", "mse"]
    command("export", str(run), "-o", str(tmp_path / "found.py"))
    assert "class FoundLoss" in (tmp_path / "found.py").read_text()


def test_an_instance_gives_only_what_differs_from_its_class():
    from gp_losses.api import _instance_overrides

    assert _instance_overrides(tt.Digits()) == []  # a config file's task.metric stands
    assert _instance_overrides(tt.Digits(tt.Digits.Options(iterations=7), "miou")) == [
        "task.options.iterations=7", 'task.metric="miou"']
    with pytest.raises(InputError, match=r"search.plot: <object object .* is not a config value"):
        to_overrides({"search__plot": object()})
    assert to_overrides({"proxy__cache": __import__("pathlib").Path("a/b")}) == ['proxy.cache="a/b"']
