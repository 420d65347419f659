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
from search_helpers import FAST, ROOT, lines, status

QUICK = {"search": {"population_init": 4, "batch": 2}, "protocol": {"steps": 100, "lr": 0.005},
         "final": {"top": 0}, "search__plot": False}

STANDALONE = r"""
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


def test_workers_start_scoop_for_the_user(tmp_path):
    result = gp_losses.search("template_tasks:Digits", out=tmp_path / "run", evaluations=4, workers=2, **QUICK)
    trained = [r for r in lines(result.run_dir) if "eval" in r]
    assert result.status["state"] == "finished" and len(trained) == 4
    assert (result.run_dir / "scoop.log").is_file()  # the search ran under SCOOP (both workers
    # training is checked where trainings outlast a rejection round: tests/test_packaging.py)
    serial = gp_losses.search("template_tasks:Digits", out=tmp_path / "serial", evaluations=4,
                              proxy__isolate=False, **QUICK)
    drop = ("seconds", "worker", "device")
    assert [{k: v for k, v in r.items() if k not in drop} for r in lines(serial.run_dir)] == \
        [{k: v for k, v in r.items() if k not in drop} for r in lines(result.run_dir)]
