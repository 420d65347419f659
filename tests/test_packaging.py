"""The package outside the checkout: a built wheel carries the run configurations, and an
installed (non-editable) copy finds them from any directory."""

import json
import os
import subprocess
import sys
import zipfile

from search_helpers import ROOT

CONFIGS = ("runs/cls.yaml", "runs/pose.yaml", "runs/seg.yaml", "runs/det.yaml", "runs/ins.yaml",
           "runs/paper/pose_coco.yaml", "runs/paper/seg_voc.yaml", "runs/paper/det_coco.yaml",
           "runs/paper/ins_coco.yaml")


def test_the_wheel_ships_the_run_configs_and_an_install_finds_them(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(tmp_path / "dist"), ROOT],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("gp_losses-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(CONFIGS) <= names and {"gp_losses/sandboxed.py", "tasks/ins/__init__.py"} <= names
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                              "--target", str(site), str(wheel)], capture_output=True, text=True,
                             timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import json, gp_losses.context as c; cfg = c.load_run_config('pose', None, []); "
            "print(json.dumps([c.__file__, str(c.default_config_path('pose')), cfg.task.options['schedule']]))")
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    module, config, schedule = json.loads(done.stdout)
    assert module.startswith(str(site)) and config == str(site / "runs" / "pose.yaml")
    assert schedule == "constant"  # runs/pose.yaml's value, not the dataclass default (cosine)
