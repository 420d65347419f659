"""Helpers for the engine's end-to-end tests: a fast configuration, the run files, the CLI."""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["search.population_init=4", "search.evaluations=10", "search.batch=2", "protocol.steps=100",
        "protocol.lr=0.005", "task.options.iterations=30", "search.plot=false"]
"""A digits search of 10 evaluations that runs in seconds (tests/gp_losses/test_plot.py draws)."""
IN_PROCESS = "proxy.isolate=false"
"""Jobs in the test's own process: 2-3 s faster per run. For tests that are not about
isolation; a run's records are the same either way (tests/gp_losses/test_resume.py)."""


LOAD_ALONE = r"""
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
"""
"""Python that imports the exported module at argv[1] as `module` in an interpreter that refuses
the project's packages: what an export needs is torch alone (tests/gp_losses/test_export.py,
test_api.py run it with `python -c`)."""


def stop_after_batch(monkeypatch, batch):
    """Make an in-process search raise KeyboardInterrupt (a Ctrl-C) right after it recorded
    and checkpointed batch `batch`: a stop at a known point, for resume tests."""
    from gp_losses.evolution import Evolution

    record = Evolution.record

    def stopping(self, records, started):
        record(self, records, started)
        if self.state.batches == batch:
            raise KeyboardInterrupt

    monkeypatch.setattr(Evolution, "record", stopping)


def sets(overrides):
    """`--set` flags for a list of overrides."""
    return [arg for item in overrides for arg in ("--set", item)]


def lines(run_dir):
    with open(os.path.join(run_dir, "evaluations.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def status(run_dir):
    with open(os.path.join(run_dir, "status.json")) as fh:
        return json.load(fh)


def stable(records):
    """Records without what legitimately differs between runs: timings and process ids."""
    drop = {"seconds", "worker", "device"}

    def keep(record):
        out = {k: v for k, v in record.items() if k not in drop}
        if "runs" in out:  # a promotion's trainings (fidelity.rungs)
            out["runs"] = [keep(run) for run in out["runs"]]
        return out
    return [keep(r) for r in records]


def cli(*argv, **kw):
    """`python -m gp_losses ARGV` in the repository, with the toy tasks importable."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    return subprocess.Popen([sys.executable, "-m", "gp_losses", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(condition, timeout=240.0):
    """Poll `condition()` until it is true; False if `timeout` passes first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def paper_task(config_file, overrides):
    """(config, task) of a paper run config (runs/paper/*.yaml) with `overrides`, validated."""
    from gp_losses.context import build_context, load_run_config

    config = load_run_config(None, os.path.join(ROOT, config_file), overrides)
    return config, build_context(config).make_task("cpu")


def trains_two_iterations(task, baseline, metrics):
    """Train `task` two iterations with its `baseline`: ok, exactly `metrics`, each in [0, 1]."""
    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.space import SearchSpace

    space = SearchSpace(task.branches, python_losses=task.python_losses)
    result = proxy_evaluate(task, space.compile(space.parse(task.baselines[baseline])), seed=0, timeout_s=600)
    assert result.status == "ok" and result.iterations == 2, result.error
    assert set(result.metrics) == set(metrics)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    return result
