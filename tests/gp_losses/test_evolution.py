"""The search engine end to end on the digits task, kept small: faults, resume, accounting."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gp_losses.evolution import FILL_ROUNDS, evaluation_seed
from gp_losses.search import run_search

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["search.population_init=4", "search.evaluations=10", "search.batch=2", "protocol.steps=100",
        "protocol.lr=0.005", "task.options.iterations=30"]


def _lines(run_dir):
    with open(os.path.join(run_dir, "evaluations.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def _stable(records):
    """Records without what legitimately differs between runs: timings and process ids."""
    drop = {"seconds", "worker", "device"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


def test_search_writes_every_file_and_finishes(tmp_path):
    out = tmp_path / "run"
    summary = run_search("cls", out=str(out), seed=0, overrides=FAST)
    for name in ("config.yaml", "evaluations.jsonl", "logbook.csv", "hall_of_fame.json",
                 "status.json", "checkpoint.pkl"):
        assert (out / name).is_file(), name
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["evaluations"] == 10
    records = _lines(out)
    evaluated = [r for r in records if "eval" in r]
    assert sorted(r["eval"] for r in evaluated) == list(range(10))
    assert [r["index"] for r in records] == list(range(len(records)))
    assert {r["status"] for r in records} <= {"ok", "invalid", "error", "timeout", "reused",
                                              "rejected", "surplus"}
    hall = json.loads((out / "hall_of_fame.json").read_text())
    assert hall and hall[0]["score"] == summary["best"]["score"]
    assert hall[0]["score"] == max(r["score"] for r in evaluated if r["status"] == "ok")
    assert all(set(h) >= {"expr", "formula", "score"} for h in hall)
    # a batch trains `search.batch` losses unless its top-up rounds kept re-making known ones
    with open(out / "logbook.csv") as fh:
        rows = list(csv.DictReader(fh))
    done = reused = 0
    for row in rows:
        trained, reuses = int(row["evaluations"]) - done, int(row["reused"]) - reused
        assert trained == min(2, 10 - done) or reuses >= FILL_ROUNDS, row
        done, reused = int(row["evaluations"]), int(row["reused"])


@pytest.mark.parametrize("fault, status", [("raise", "error"), ("nan", "invalid"), ("hang", "timeout")])
def test_a_failing_candidate_is_recorded_and_the_search_finishes(tmp_path, fault, status):
    out = tmp_path / "run"
    overrides = FAST + ["search.evaluations=6", "proxy.timeout_s=2", f"task.options.fault={fault}",
                        "task.options.fault_eval=4", "task.options.run_seed=0"]
    start = time.time()
    run_search("toy_tasks:FaultyDigits", out=str(out), seed=0, overrides=overrides)
    assert time.time() - start < 120
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    (record,) = [r for r in _lines(out) if r.get("eval") == 4]
    assert record["status"] == status and record["score"] == 0.0
    if fault == "raise":
        assert "injected failure" in record["error"]
    hall = json.loads((out / "hall_of_fame.json").read_text())
    assert all(h["eval"] != 4 for h in hall)


def test_evaluation_seeds_depend_on_run_seed_and_index_only():
    assert evaluation_seed(0, 3) == evaluation_seed(0, 3)
    assert len({evaluation_seed(s, i) for s in range(3) for i in range(50)}) == 150


def _cli(*argv, **kw):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    return subprocess.Popen([sys.executable, "-m", "gp_losses", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["search", "--task", "cls", "--seed", "1"] + [a for o in FAST + ["search.evaluations=14"]
                                                          for a in ("--set", o)]
    killed = tmp_path / "killed"
    proc = _cli(*args, "--out", str(killed))
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if json.loads((killed / "status.json").read_text()).get("evaluations", 0) >= 6:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    status = json.loads((killed / "status.json").read_text())
    assert status["state"] == "running" and status["evaluations"] < 14  # really interrupted
    resumed = _cli("search", "--resume", str(killed))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    reference = tmp_path / "reference"
    run_search("cls", out=str(reference), seed=1, overrides=FAST + ["search.evaluations=14"])
    assert _stable(_lines(killed)) == _stable(_lines(reference))
    assert (json.loads((killed / "hall_of_fame.json").read_text())
            == json.loads((reference / "hall_of_fame.json").read_text()))
    assert json.loads((killed / "status.json").read_text())["state"] == "finished"


def test_resume_extends_a_finished_run(tmp_path):
    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=2, overrides=FAST + ["search.evaluations=6"])
    summary = run_search(None, resume=str(out), evaluations=9)
    assert summary["evaluations"] == 9
    evaluated = sorted(r["eval"] for r in _lines(out) if "eval" in r)
    assert evaluated == list(range(9))
    assert "evaluations: 9" in (out / "config.yaml").read_text()


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    from gp_losses.errors import InputError

    with pytest.raises(InputError, match="no such directory"):
        run_search(None, resume=str(tmp_path / "missing"))
    with pytest.raises(InputError, match="only --evaluations"):
        run_search(None, resume=str(tmp_path), seed=3)


def test_two_scoop_workers_share_the_training_and_match_a_serial_run(tmp_path):
    """Under `python -m scoop -n 2` both processes train losses, and the run's records equal
    those of the same run without SCOOP (batch 2: the batch SCOOP's two workers get)."""
    args = ["--task", "cls", "--seed", "2"] + [a for o in FAST for a in ("--set", o)]
    scoop_out, serial_out = tmp_path / "scoop", tmp_path / "serial"
    done = subprocess.run([sys.executable, "-m", "scoop", "-n", "2", "gp_losses/main.py", *args,
                           "--out", str(scoop_out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    status = json.loads((scoop_out / "status.json").read_text())
    assert status["state"] == "finished", done.stderr[-2000:]
    run_search("cls", out=str(serial_out), seed=2, overrides=FAST)
    trained = [r for r in _lines(scoop_out) if r.get("status") == "ok"]
    assert len({r["worker"] for r in trained}) == 2
    assert _stable(_lines(scoop_out)) == _stable(_lines(serial_out))
