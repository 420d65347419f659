"""A resume continues the same run: after a kill at any point once the run directory exists,
with any number of SCOOP workers; a damaged checkpoint or a second search on the same
directory is refused with a message, and a killed run shows as `stale`."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest
from search_helpers import FAST, IN_PROCESS, ROOT, cli, lines, sets, stable, status, wait_for

from gp_losses.cli import main
from gp_losses.driver import run_search

FAULTY = "toy_tasks:FaultyDigits"


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _same_run(a, b):
    assert stable(lines(a)) == stable(lines(b))
    assert json.loads((a / "hall_of_fame.json").read_text()) == json.loads((b / "hall_of_fame.json").read_text())


def _alive(pids):
    """Those of `pids` still running (a zombie, waiting to be reaped, is not)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _descendants(root):
    """The pids of every process below `root` now: children, theirs, and so on."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parents[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


def test_sigterm_then_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    """Two stops of one run: SIGTERM (a batch scheduler's preemption) ends it cleanly, status
    `interrupted` with the resume command, exit 143, its sandbox ended; the resumed run is then
    killed with SIGKILL (a crash: status left `running`, shown as `stale`); the second resume
    ends as a run never stopped."""
    overrides = FAST + ["search.evaluations=14"]
    killed = tmp_path / "killed"
    proc = cli("search", "--task", "cls", "--seed", "1", *sets(overrides), "--out", str(killed))
    assert wait_for(lambda: status(killed).get("evaluations", 0) >= 4)
    sandboxes = _descendants(proc.pid)
    assert sandboxes  # the search's sandbox child
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert f"stopped by SIGTERM: the run keeps what it did up to its last checkpoint; continue it with " \
           f"gp-losses search --resume {killed}" in err and "Traceback" not in err
    stopped = status(killed)
    assert stopped["state"] == "interrupted" and stopped["exit_code"] == 143 and stopped["evaluations"] < 14
    assert wait_for(lambda: not _alive(sandboxes), 10)  # no sandbox left running

    resumed = cli("search", "--resume", str(killed))
    before = stopped["evaluations"]
    assert wait_for(lambda: status(killed).get("state") == "running" and status(killed)["evaluations"] >= before + 4)
    _kill(resumed)
    assert status(killed)["state"] == "running" and status(killed)["evaluations"] < 14  # really interrupted
    assert main(["show", str(killed)]) == 0
    shown = json.loads(capsys.readouterr().out)["status"]
    assert shown["state"] == "stale" and f"--resume {killed}" in shown["note"]
    resumed = cli("search", "--resume", str(killed))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    reference = tmp_path / "reference"  # jobs in this process: the same records
    run_search("cls", out=str(reference), seed=1, overrides=overrides + [IN_PROCESS])
    _same_run(killed, reference)
    assert status(killed)["state"] == "finished"


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    """Killed while its first training hangs (once): no checkpoint yet, and --resume starts the
    run again from its config.yaml."""
    overrides = FAST + ["task.options.fault=hang", "task.options.fault_eval=0", "task.options.run_seed=1",
                        f"task.options.fault_dir={tmp_path}"]
    killed = tmp_path / "killed"
    proc = cli("search", "--task", FAULTY, "--seed", "1", *sets(overrides), "--out", str(killed))
    assert wait_for(lambda: (tmp_path / "fault").exists())
    _kill(proc)
    assert not (killed / "checkpoint.pkl").exists() and (killed / "config.yaml").exists()
    assert run_search(None, resume=str(killed))["status"] == "finished"
    reference = tmp_path / "reference"
    run_search(FAULTY, out=str(reference), seed=1, overrides=overrides + [IN_PROCESS])  # fault spent
    _same_run(killed, reference)


def test_resume_extends_a_finished_run(tmp_path):
    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=2, overrides=FAST + ["search.evaluations=6", IN_PROCESS])
    summary = run_search(None, resume=str(out), evaluations=9)
    assert summary["evaluations"] == 9
    evaluated = sorted(r["eval"] for r in lines(out) if "eval" in r)
    assert evaluated == list(range(9))
    assert "evaluations: 9" in (out / "config.yaml").read_text()


def test_scoop_run_stopped_by_sigterm_resumes_serially_as_a_serial_run(tmp_path):
    """`python -m scoop -n 2` with the default batch (one per worker): both workers train, a
    loss that kills its process every time is an `error`; SIGTERM to the whole job (as a batch
    scheduler ends one) leaves status `interrupted` and no process of it running, and the run,
    resumed without SCOOP, keeps batch 2 and ends as the serial run with batch 2 does.
    Trainings last 1 s, longer than a rejection job's time box: a free worker takes a waiting
    training, and a 0.1-s training could all go to whichever worker came free first. No rerun
    of a dead job (the reruns have tests of their own): each rerun starts a sandbox."""
    overrides = [o for o in FAST if o.split("=")[0] not in ("search.batch", "search.evaluations")] + [
        "task.options.fault=exit", "task.options.fault_eval=3", "task.options.run_seed=0",
        "task.options.train_s=1.0", "proxy.retries=0", "search.evaluations=8", "search.compare_baselines=false"]
    out = tmp_path / "scoop"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    job = subprocess.Popen([sys.executable, "-m", "scoop", "-n", "2", "gp_losses/main.py", "--task", FAULTY,
                            "--seed", "0", *sets(overrides), "--out", str(out)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: status(out).get("evaluations", 0) >= 4)
    processes = _descendants(job.pid)  # the launcher's shells, the origin, the worker, sandboxes
    assert len(processes) >= 4
    os.killpg(job.pid, signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    stopped = status(out)
    assert stopped["state"] == "interrupted" and stopped["evaluations"] < 8, err[-3000:]
    assert wait_for(lambda: not _alive(processes), 15), [open(f"/proc/{p}/cmdline").read()[:200] for p in _alive(processes)]
    assert "batch: 2" in (out / "config.yaml").read_text()
    trained = [r for r in lines(out) if r.get("status") == "ok"]
    assert len({r["worker"] for r in trained}) == 2
    (crashed,) = [r for r in lines(out) if r.get("eval") == 3]
    assert crashed["status"] == "error" and "process died: exit code 3" in crashed["error"]
    run_search(None, resume=str(out))
    serial = tmp_path / "serial"  # its trainings need not last: how long they sleep changes no result
    run_search(FAULTY, out=str(serial), seed=0, overrides=overrides + ["search.batch=2", "task.options.train_s=0"])
    _same_run(out, serial)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + ["search.evaluations=2", IN_PROCESS])
    return out


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "cannot be read"),
    (lambda data: b"not a pickle at all", "cannot be read"),
    (lambda data: pickle.dumps({"format": 1, "version": "0.0.1", "state": None}),
     "written by gp-losses 0.0.1 (checkpoint format 1)"),
    (lambda data: pickle.dumps([1, 2, 3]), "written by another version"),
])
def test_a_damaged_checkpoint_is_refused_with_exit_2(tmp_path, capsys, finished_run, damage, message):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    path = out / "checkpoint.pkl"
    path.write_bytes(damage(path.read_bytes()))
    capsys.readouterr()
    assert main(["search", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "checkpoint.pkl" in err and "Traceback" not in err


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    assert main(["search", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["search", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["search", "--resume", str(tmp_path), "--seed", "3"]) == 2
    assert "only --evaluations" in capsys.readouterr().err


def test_a_second_search_on_the_same_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    first = cli("search", "--task", FAULTY, *sets(FAST + ["task.options.setup_fault=slow", "search.evaluations=4",
                                                          IN_PROCESS]), "--out", str(out))
    assert wait_for(lambda: status(out)["state"] == "running")
    assert main(["search", "--resume", str(out)]) == 2
    assert "is in use by another search (pid" in capsys.readouterr().err
    assert main(["search", "--task", "cls", "--out", str(out)]) == 2
    assert "in use by another search" in capsys.readouterr().err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert status(out)["state"] == "finished" and len([r for r in lines(out) if "eval" in r]) == 4
