"""Sandboxes forked from the process's starter (gp_losses/sandbox.py): the same results as a
fresh interpreter's, gone with their process, and a fresh interpreter where no starter runs."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from gp_losses import sandbox
from gp_losses.config import to_dict
from gp_losses.context import load_run_config
from gp_losses.messages import RunSpec, TrainJob

from search_helpers import ROOT, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="starters fork on Linux only")


@pytest.fixture(scope="module")
def spec():
    return RunSpec(to_dict(load_run_config("cls", None, ["task.options.iterations=30"])))


def _parent(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _train(spec, seed=3):
    box = sandbox.Sandbox(spec)
    try:
        box.start()
        kind, pid = type(box.proc).__name__, box.proc.pid
        parent = _parent(pid)
        return box.call(TrainJob(spec.key, {"cls": "Neg(Mul(y, Log(yhat)))"}, seed), 120), kind, parent
    finally:
        box.close()


def test_sandboxes_fork_from_one_starter_and_train_as_fresh_interpreters_do(spec, monkeypatch):
    monkeypatch.setattr(sandbox, "_NO_STARTER", False)  # as it is, and again after this test
    first, kind, parent = _train(spec)
    again, kind_again, parent_again = _train(spec)
    assert kind == kind_again == "Forked" and parent == parent_again == sandbox._STARTER.proc.pid
    # a starter that cannot run here (it dies before forking): a fresh interpreter, from then on
    monkeypatch.setattr(sandbox, "_STARTER", None)
    monkeypatch.setattr(sandbox, "STARTER_CODE", "import os; os._exit(3)  # {root} {sock} {relay}")
    fresh, kind_fresh, parent_fresh = _train(spec)
    assert kind_fresh == "Popen" and parent_fresh == os.getpid()
    assert sandbox._NO_STARTER and sandbox._STARTER is None
    assert first.status == again.status == fresh.status == "ok"
    assert first.score == again.score == fresh.score and first.metrics == fresh.metrics


def test_a_sandbox_that_dies_reports_its_signal(spec):
    box = sandbox.Sandbox(spec)
    box.start()
    child = box.proc
    os.kill(child.pid, signal.SIGSEGV)
    assert child.wait(10) == -signal.SIGSEGV and box._reap() == "signal 11 (SIGSEGV)"
    box.close()


KILLED_RELAY = r"""
import fcntl, os, sys
from gp_losses import sandbox
from gp_losses.config import to_dict
from gp_losses.context import load_run_config
from gp_losses.messages import RunSpec, TrainJob
if sys.argv[1] == "here":
    sandbox.fork_starter_from_here()
spare = open(os.devnull)  # a descriptor or two before it, as in a run
lock = open(sys.argv[2], "w")  # as a run directory's lock is held
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
spec = RunSpec(to_dict(load_run_config("cls", None, ["task.options.iterations=30"])))
box = sandbox.Sandbox(spec)
box.start()
result = box.call(TrainJob(spec.key, {"cls": "Neg(Mul(y, Log(yhat)))"}, 3), 120)
print(box.proc.starter.proc.pid, box.proc.pid, result.status, result.score, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("where", ["fresh", "here"])
def test_a_killed_process_takes_its_starter_and_its_sandbox_with_it(tmp_path, where):
    """A fresh starter, or one forked from a gp-losses program (fork_starter_from_here): the
    same training, nothing of the process's held by the starter (a run directory's lock would
    outlive a killed run), and both gone with the process."""
    lock = tmp_path / ".lock"
    relay = subprocess.Popen([sys.executable, "-c", KILLED_RELAY, where, str(lock)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        starter, child, status, score = relay.stdout.readline().split()
        starter, child = int(starter), int(child)
        assert status == "ok" and float(score) == _train(RunSpec(to_dict(load_run_config(
            "cls", None, ["task.options.iterations=30"]))))[0].score
        assert _alive(starter) and _alive(child) and _parent(child) == starter and _parent(starter) == relay.pid
        for pid in (starter, child):
            held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert str(lock) not in held and held.count(os.readlink(f"/proc/{relay.pid}/fd/0")) == 0
        relay.kill()  # SIGKILL: no clean-up of its own
        relay.wait(10)
        assert wait_for(lambda: not _alive(starter) and not _alive(child), 10)
        with open(lock, "w") as fh:  # nothing holds the lock now
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        relay.kill()


def test_a_closed_starter_ends_once_its_sandbox_has(spec):
    box = sandbox.Sandbox(spec)
    box.start()
    starter = box.proc.starter
    starter.close()  # as when the environment changes: the next sandbox gets a new starter
    assert box.call(TrainJob(spec.key, {"cls": "Neg(Mul(y, Log(yhat)))"}, 0), 120).status == "ok"
    assert starter.proc.poll() is None
    box.close()
    assert box.proc is None and wait_for(lambda: starter.proc.poll() is not None, 10)
    assert starter.proc.returncode == 0 and not starter.alive


def test_runs_on_a_gpu_start_their_sandboxes_afresh(monkeypatch, tmp_path):
    """CUDA does not work in a process forked after its parent touched the driver."""
    cpu, auto, cuda = (RunSpec({"proxy": {"device": d}}) for d in ("cpu", "auto", "cuda"))
    assert sandbox.on_cpu(cpu) and not sandbox.on_cpu(cuda)
    monkeypatch.setattr(sandbox, "GPU_DEVICE_FILES", (str(tmp_path / "nvidiactl"),))
    assert sandbox.on_cpu(auto)
    (tmp_path / "nvidiactl").touch()  # a node with a GPU driver loaded
    assert not sandbox.on_cpu(auto) and sandbox.on_cpu(cpu)

