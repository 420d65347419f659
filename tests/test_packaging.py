"""The package outside the checkout: a built wheel carries the run configurations, and an
installed (non-editable) copy finds them from any directory, searches with SCOOP workers that
it starts itself, and runs its contract suite against a user's task."""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from search_helpers import ROOT

CONFIGS = ("runs/cls.yaml", "runs/pose.yaml", "runs/seg.yaml", "runs/det.yaml", "runs/ins.yaml",
           "runs/paper/pose_coco.yaml", "runs/paper/seg_voc.yaml", "runs/paper/det_coco.yaml",
           "runs/paper/ins_coco.yaml")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(dist), ROOT],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (built,) = dist.glob("gp_losses-*.whl")
    return built


def test_the_wheel_ships_the_run_configs_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(CONFIGS) <= names and {"gp_losses/sandboxed.py", "tasks/ins/__init__.py"} <= names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)


USER_TASK = textwrap.dedent("""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from gp_losses import LabelTask

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 8, generator=generator)
    labels = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long()

    Mine = LabelTask.define(
        "mine", model=lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
        train=TensorDataset(inputs[:64], labels[:64]), val=TensorDataset(inputs[64:], labels[64:]),
        options={"iterations": 20, "batch_size": 16})
""")

USER_TEST = textwrap.dedent("""
    import os

    import pytest

    import gp_losses.testing
    from gp_losses.testing import TaskContract
    from mytask import Mine


    def test_the_contract_comes_from_the_installed_wheel():
        assert gp_losses.testing.__file__.startswith(os.environ["WHEEL_SITE"])


    class TestMine(TaskContract):
        @pytest.fixture
        def task(self):
            return Mine()
""")


def test_an_installed_wheel_finds_its_configs_searches_with_workers_and_runs_the_contract_outside_the_checkout(
        tmp_path, wheel):
    """A fresh venv holding the wheel (its dependencies reached through a .pth to this
    environment's site-packages, which are not processed as a site: this checkout's editable
    install stays out): from any directory it finds its run configs, `gp-losses search
    --workers 2` starts SCOOP from the installed package, both workers train; `python -m
    pytest` runs the shipped contract on a user's template task."""
    venv = tmp_path / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    user = tmp_path / "user"
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=os.pathsep.join([str(venv / "bin"), os.defpath]), WHEEL_SITE=site)

    code = ("import json, gp_losses.context as c; cfg = c.load_run_config('pose', None, []); "
            "print(json.dumps([c.__file__, str(c.default_config_path('pose')), cfg.task.options['schedule']]))")
    found = subprocess.run(["python", "-c", code], cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
    module, config, schedule = json.loads(found.stdout)
    assert module.startswith(site) and config == str(Path(site) / "runs" / "pose.yaml")
    assert schedule == "constant"  # runs/pose.yaml's value, not the dataclass default (cosine)

    # 1500 iterations: a training (about 1 s) outlasts a rejection job's time box (0.5 s), so
    # the worker that is free first cannot run both of a batch's trainings before the other is
    searched = subprocess.run(["gp-losses", "search", "--task", "cls", "--evaluations", "4", "--workers", "2",
                               "--seed", "0", "--out", "run", "-q", "--set", "task.options.iterations=1500",
                               "--set", "search.compare_baselines=false"],
                              cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert json.loads((user / "run" / "status.json").read_text())["state"] == "finished"
    rows = [json.loads(line) for line in (user / "run" / "evaluations.jsonl").read_text().splitlines()]
    trained = [row for row in rows if "eval" in row]
    assert len(trained) == 4 and len({row["worker"] for row in trained}) == 2  # both workers trained
    assert searched.stderr == ""  # -q: nothing but warnings, SCOOP's launcher too

    (user / "mytask.py").write_text(USER_TASK)
    (user / "test_mytask.py").write_text(USER_TEST)
    tested = subprocess.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mytask.py"],
                            cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout and "failed" not in tested.stdout and "skipped" not in tested.stdout
