"""SCOOP's own log, routed to the run directory; lost futures sent again only when overdue; the
internals SCOOP is checked for; a rejection job that kills its process, taken apart; the
workers without SCOOP."""

import logging
import time
import types

import pytest
from scoop import _control

from gp_losses import cluster, jobs
from gp_losses.core.errors import TaskSetupError
from gp_losses.messages import Checked, CheckJob, Made, Range, RangeDone, RunSpec
from gp_losses.outcomes import ProtocolResult
from gp_losses.sandbox import ProcessDied
from gp_losses.workers import Done, Workers


@pytest.fixture
def scoop_logger(monkeypatch):
    """SCOOP's logger as its launcher sets it up: a console handler, propagating to root."""
    monkeypatch.setattr(cluster, "running", lambda: True)
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
    cluster.route_log(str(tmp_path / "first.log"))
    cluster.route_log(str(tmp_path / "scoop.log"))  # a second run in the same process
    scoop_logger.warning(payload)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("SCOOP warning: Lost track of future")
    assert len(err[0]) < 200 and str(tmp_path / "scoop.log") in err[0]
    assert payload in (tmp_path / "scoop.log").read_text()
    assert (tmp_path / "first.log").read_text() == ""
    assert "Lost track" not in caplog.text  # not propagated to the root logger's handlers
    assert sum(isinstance(h, logging.FileHandler) for h in scoop_logger.handlers) == 1


def test_without_scoop_the_log_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "running", lambda: False)
    before = list(logging.getLogger("SCOOPLogger").handlers)
    cluster.route_log(str(tmp_path / "scoop.log"))
    assert logging.getLogger("SCOOPLogger").handlers == before and not (tmp_path / "scoop.log").exists()


class FakeQueue:
    def __init__(self):
        self.sent = []
        self.socket = types.SimpleNamespace(sendFuture=self.sent.append)

    def askForPreviousFutures(self):  # SCOOP's own: asks the broker, which always says "lost"
        raise AssertionError("SCOOP's own search for lost futures must not run")


def test_only_a_future_past_its_jobs_time_limits_is_sent_again(monkeypatch, caplog):
    queue = FakeQueue()
    monkeypatch.setattr(_control, "execQueue", queue, raising=False)
    monkeypatch.setattr(cluster, "ORIGIN", cluster.Origin())
    cluster.keep_origin_share()
    assert queue.lowwatermark == 0.0
    now = time.monotonic()
    futures = {key: types.SimpleNamespace(isDone=done) for key, done in
               (("overdue", False), ("running", False), ("finished", True))}
    monkeypatch.setattr(_control, "futureDict", futures, raising=False)
    cluster.ORIGIN.deadlines.update({"overdue": (now - 1, 50.0), "running": (now + 100, 50.0),
                                     "finished": (now - 1, 50.0)})
    queue.askForPreviousFutures()
    assert queue.sent == [futures["overdue"]]
    assert cluster.ORIGIN.deadlines["overdue"][0] > now + 40  # given its span again, not resent at once
    queue.askForPreviousFutures()
    assert queue.sent == [futures["overdue"]]
    assert "sending it again" in caplog.text


def test_a_scoop_without_the_internals_driven_is_named_once_and_the_origin_works_alone(monkeypatch, caplog):
    monkeypatch.setattr(cluster, "ORIGIN", cluster.Origin())
    monkeypatch.setattr(_control, "execQueue", types.SimpleNamespace(), raising=False)  # moved internals
    monkeypatch.setattr(cluster, "running", lambda: True)
    monkeypatch.setattr(cluster, "size", lambda: 4)
    with caplog.at_level(logging.WARNING, logger="gp_losses"):
        assert Workers().width == 1 and Workers().width == 1
    warnings = [r.getMessage() for r in caplog.records if "lacks the internals" in r.getMessage()]
    assert len(warnings) == 1 and "jobs run on the origin alone" in warnings[0]
    assert "scoop==0.7.2.0" in warnings[0]


def test_a_scoop_release_not_tested_is_named(monkeypatch, caplog):
    monkeypatch.setattr(cluster, "ORIGIN", cluster.Origin())
    monkeypatch.setattr(cluster, "_has_internals", lambda: True)
    monkeypatch.setattr(cluster, "version", lambda: "0.7.3.0")
    with caplog.at_level(logging.WARNING, logger="gp_losses"):
        assert cluster.check()
    assert "SCOOP 0.7.3.0 is not a release gp_losses was tested with (0.7.2.0)" in caplog.text


class DyingSandbox:
    """Kills its process on a job of several candidates, and on candidate 3 alone."""

    def __init__(self):
        self.calls = []

    def call(self, job, timeout):
        self.calls.append(type(job).__name__)
        if type(job).__name__ == "DescribeJob":
            return f"expr{job.index}", Made("init")
        (part,) = job.ranges
        if part.hi - part.lo > 1 or part.lo == 3:
            raise ProcessDied("process died: signal 11 (SIGSEGV); 2 attempt(s)")
        passed = part.lo == 5
        result = ProtocolResult(passed, None if passed else "low_gain", seconds=0.01)
        return [RangeDone(part.lo + 1, (Checked(part.lo, f"expr{part.lo}", Made("init"), result),), 0.01)]


def test_a_rejection_job_that_kills_its_process_is_checked_candidate_by_candidate(monkeypatch):
    box = DyingSandbox()
    spec = RunSpec({"protocol": {"timeout_s": 5}, "proxy": {"device": "cpu"}})
    process = jobs.WorkerProcess()
    process.specs[spec.key] = spec
    process.sandbox, process.sandbox_key = box, spec.key
    monkeypatch.setattr(jobs, "PROCESS", process)
    (part,) = jobs.check_job(CheckJob(spec.key, (Range(0, 0, None, 0, 10, True),), 60.0))
    assert part.end == 6  # stopped at the first pass
    assert [c.index for c in part.checked] == list(range(6))
    killer = part.checked[3]
    assert killer.expr == "expr3" and killer.result.reason == "error" and "SIGSEGV" in killer.result.error
    assert part.checked[5].result.passed and box.calls.count("DescribeJob") == 1


def test_a_job_naming_a_run_this_worker_never_got_says_so():
    with pytest.raises(RuntimeError, match="run spec nope never reached worker"):
        jobs.WorkerProcess().spec("nope")


def test_without_scoop_there_is_one_worker_and_a_job_runs_when_given():
    workers = Workers()
    assert workers.width == 1 and workers.free == [0]
    workers.start(0, lambda x: x * 2, 21, "train 0", 60.0)
    assert workers.free == [] and workers.busy == 1
    (done,) = workers.wait()
    assert isinstance(done, Done) and (done.worker, done.tag, done.value) == (0, "train 0", 42)
    assert done.seconds >= 0 and workers.free == [0] and workers.busy == 0 and workers.blocked >= 0

    def setup_fails(_):
        raise TaskSetupError("task setup failed: no data")

    workers.start(0, setup_fails, None, "reject", 60.0)
    with pytest.raises(TaskSetupError, match="no data"):
        workers.wait()
    assert workers.free == [0]
    with pytest.raises(RuntimeError, match="no job running"):
        workers.wait()
