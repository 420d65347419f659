"""Stopping on request and running out of disk: what the user is told, what status.json says,
and that a resume still ends as an uninterrupted run. (SIGTERM to a real search, serial and
under SCOOP: tests/gp_losses/test_resume.py.)"""

import errno
import json
import os
import signal
import threading
import time

import pytest
from search_helpers import FAST, IN_PROCESS, lines, stable, status

from gp_losses.cli import main
from gp_losses.core.errors import Stopped
from gp_losses.core.stopping import stop_on_signals
from gp_losses.driver import run_search
from gp_losses.rundir import RunDir


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers are installed from the main thread only")
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_inside_a_run_raises_stopped_and_the_handlers_come_back(signum, code):
    before = signal.getsignal(signum)
    with pytest.raises(Stopped) as caught:
        with stop_on_signals():
            os.kill(os.getpid(), signum)
            time.sleep(10)  # the handler raises here, at once
    assert caught.value.exit_code == code and str(caught.value) == f"stopped by {signal.Signals(signum).name}"
    assert signal.getsignal(signum) is before


def _no_space_at(monkeypatch, call):
    """RunDir.save_checkpoint fails with ENOSPC at its `call`-th call (1-based), as a full disk."""
    real, calls = RunDir.save_checkpoint, []

    def save(self, state):
        calls.append(1)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "checkpoint.pkl"))
        return real(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", save)


def test_a_full_disk_says_which_file_what_is_kept_and_what_to_do(tmp_path, monkeypatch, capsys):
    overrides = FAST + ["search.evaluations=6", IN_PROCESS]
    out = tmp_path / "run"
    _no_space_at(monkeypatch, 2)
    args = ["search", "--task", "cls", "--seed", "3", "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"no space left on the device of {out / 'checkpoint.pkl'}" in err
    assert "the last checkpoint (checkpoint.pkl, written atomically) is intact" in err
    assert f"continue with gp-losses search --resume {out}" in err
    assert status(out)["state"] == "failed" and "no space left" in status(out)["reason"]
    monkeypatch.undo()  # room again: the resume continues from the checkpoint of batch 1
    run_search(None, resume=str(out))
    reference = tmp_path / "reference"
    run_search("cls", out=str(reference), seed=3, overrides=overrides)
    assert stable(lines(out)) == stable(lines(reference))
    assert json.loads((out / "hall_of_fame.json").read_text()) == json.loads((reference / "hall_of_fame.json").read_text())


def test_sigterm_during_a_retrain_keeps_the_trainings_done_and_the_rerun_trains_the_rest(tmp_path, monkeypatch):
    """In this process (the main thread): a retrain stopped by SIGTERM after its first training
    raises Stopped (exit 143) saying what is kept; its sandbox is closed; the same call again
    trains only the rest."""
    from gp_losses.retrain import retrain

    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + ["search.evaluations=2", "search.population_init=2",
                                                              IN_PROCESS])
    journal = out / "retrain" / "trainings.jsonl"
    slow = ["retrain.options.iterations=800"]

    def stop_after_the_first_training():
        while not (journal.is_file() and journal.read_text().count("\n") >= 1):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_after_the_first_training, daemon=True).start()
    with pytest.raises(Stopped) as caught:
        retrain(str(out), top=1, seeds=2, overrides=slow)
    assert caught.value.exit_code == 143 and f"the trainings done are kept in {journal}" in caught.value.note
    from gp_losses.jobs import PROCESS

    assert PROCESS.sandbox is None or PROCESS.sandbox.proc is None  # the sandbox was closed
    done = journal.read_text().count("\n")
    assert 1 <= done < 6
    summary = retrain(str(out), top=1, seeds=2, overrides=slow)
    assert journal.read_text().count("\n") == 6 and all(row["ok"] == 2 for row in summary["rows"])


def test_a_full_disk_during_a_retrain_keeps_the_trainings_done(tmp_path, monkeypatch, capsys):
    from gp_losses.journal import Trainings

    out = tmp_path / "run"
    run_search("cls", out=str(out), seed=0, overrides=FAST + ["search.evaluations=2", "search.population_init=2",
                                                              IN_PROCESS])
    real, calls = Trainings.append, []

    def append(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, *args)

    monkeypatch.setattr(Trainings, "append", append)
    args = ["retrain", str(out), "--top", "1", "--seeds", "1", "--schedule", "proxy", "--set", IN_PROCESS]
    assert main(args) == 1
    err = capsys.readouterr().err
    journal = out / "retrain" / "trainings.jsonl"
    assert "Traceback" not in err and f"no space left on the device of {journal}" in err
    assert f"the trainings done are kept in {journal}" in err and "it trains only the rest" in err
    monkeypatch.undo()
    assert journal.read_text().count("\n") == 2
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert journal.read_text().count("\n") == 3 and all(row["ok"] == 1 for row in summary["rows"])  # one more
