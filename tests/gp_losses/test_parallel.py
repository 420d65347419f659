"""SCOOP's own log, routed to the run directory; lost futures sent again only when overdue; a
rejection job that kills its process, taken apart."""

import logging
import time
import types

import pytest
from scoop import _control

from gp_losses import parallel
from gp_losses.core.errors import TaskSetupError
from gp_losses.sandbox import ProcessDied


@pytest.fixture
def scoop_logger(monkeypatch):
    """SCOOP's logger as its launcher sets it up: a console handler, propagating to root."""
    monkeypatch.setattr(parallel, "scoop_running", lambda: True)
    log = logging.getLogger("SCOOPLogger")
    saved = (list(log.handlers), log.propagate, log.level)
    console = logging.StreamHandler()
    log.handlers[:] = [console]
    log.propagate, log.level = True, logging.WARNING
    yield log
    for handler in log.handlers:
        handler.close()
    log.handlers[:], log.propagate, log.level = saved


def test_scoops_log_goes_to_a_file_and_the_terminal_gets_one_short_line(tmp_path, scoop_logger, capsys, caplog):
    payload = "Lost track of future (b'127.0.0.1:1', 5):_run_group((" + "{'config': ...}, " * 200 + "))"
    parallel.route_scoop_log(str(tmp_path / "first.log"))
    parallel.route_scoop_log(str(tmp_path / "scoop.log"))  # a second run in the same process
    scoop_logger.warning(payload)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("SCOOP warning: Lost track of future")
    assert len(err[0]) < 200 and str(tmp_path / "scoop.log") in err[0]
    assert payload in (tmp_path / "scoop.log").read_text()
    assert (tmp_path / "first.log").read_text() == ""
    assert "Lost track" not in caplog.text  # not propagated to the root logger's handlers
    assert sum(isinstance(h, logging.FileHandler) for h in scoop_logger.handlers) == 1


def test_without_scoop_the_log_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "scoop_running", lambda: False)
    before = list(logging.getLogger("SCOOPLogger").handlers)
    parallel.route_scoop_log(str(tmp_path / "scoop.log"))
    assert logging.getLogger("SCOOPLogger").handlers == before and not (tmp_path / "scoop.log").exists()


class FakeQueue:
    def __init__(self):
        self.sent = []
        self.socket = types.SimpleNamespace(sendFuture=self.sent.append)

    def askForPreviousFutures(self):  # SCOOP's own: asks the broker, which always says "lost"
        raise AssertionError("SCOOP's own search for lost futures must not run")


def test_only_a_future_past_its_jobs_time_limits_is_sent_again(monkeypatch, caplog):
    queue = FakeQueue()
    parallel._resend_overdue(queue)
    now = time.monotonic()
    futures = {key: types.SimpleNamespace(isDone=done) for key, done in
               (("overdue", False), ("running", False), ("finished", True))}
    monkeypatch.setattr(_control, "futureDict", futures, raising=False)
    monkeypatch.setattr(parallel, "_DEADLINES", {"overdue": (now - 1, 50.0), "running": (now + 100, 50.0),
                                                 "finished": (now - 1, 50.0)})
    queue.askForPreviousFutures()
    assert queue.sent == [futures["overdue"]]
    assert parallel._DEADLINES["overdue"][0] > now + 40  # given its span again, not resent at once
    queue.askForPreviousFutures()
    assert queue.sent == [futures["overdue"]]
    assert "sending it again" in caplog.text


class DyingSandbox:
    """Kills its process on a job of several candidates, and on candidate 3 alone."""

    def __init__(self):
        self.calls = []

    def call(self, kind, job, timeout):
        self.calls.append(kind)
        if kind == "describe":
            item, index = job
            return f"expr{index}", {"op": "init", "steps": []}
        (item,), *_ = job
        if item[4] - item[3] > 1 or item[3] == 3:
            raise ProcessDied("process died: signal 11 (SIGSEGV); 2 attempt(s)")
        passed = item[3] == 5
        result = {"passed": passed, "reason": None if passed else "low_gain", "seconds": 0.01}
        return [{"end": item[3] + 1, "results": [(item[3], f"expr{item[3]}", {}, result)], "seconds": 0.01}]


def test_a_rejection_job_that_kills_its_process_is_checked_candidate_by_candidate(monkeypatch):
    box = DyingSandbox()
    monkeypatch.setattr(parallel, "_sandbox", lambda spec: box)
    spec = {"config": {"protocol": {"timeout_s": 5}}}
    (part,) = parallel.candidates_job((spec, [(0, 0, None, 0, 10, True)], 60.0))
    assert part["end"] == 6  # stopped at the first pass
    assert [r[0] for r in part["results"]] == list(range(6))
    killer = part["results"][3]
    assert killer[1] == "expr3" and killer[3]["reason"] == "error" and "SIGSEGV" in killer[3]["error"]
    assert part["results"][5][3]["passed"] and box.calls.count("describe") == 1


def test_without_scoop_there_is_one_lane_and_a_job_runs_when_given():
    lanes = parallel.Lanes()
    assert lanes.width == 1 and lanes.free == [0]
    lanes.start(0, lambda x: x * 2, 21, ("train", 0), 60.0)
    assert lanes.free == [] and lanes.busy == 1
    ((lane, tag, result, seconds),) = lanes.wait()
    assert (lane, tag, result) == (0, ("train", 0), 42) and seconds >= 0
    assert lanes.free == [0] and lanes.busy == 0 and lanes.blocked >= 0

    def setup_fails(_):
        raise TaskSetupError("task setup failed: no data")

    lanes.start(0, setup_fails, None, ("reject", [], False), 60.0)
    with pytest.raises(TaskSetupError, match="no data"):
        lanes.wait()
    assert lanes.free == [0]
    with pytest.raises(RuntimeError, match="no job running"):
        lanes.wait()
