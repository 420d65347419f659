"""SCOOP's own log, routed to the run directory; a job whose worker is gone run on the origin;
the internals SCOOP is checked for; a rejection job that kills its process, taken apart; the
workers without SCOOP."""

import logging
import select
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
    def askForPreviousFutures(self):  # SCOOP's own: asks the broker, which always says "lost"
        raise AssertionError("SCOOP's own search for lost futures must not run")


def test_scoops_own_search_for_lost_futures_is_turned_off(monkeypatch):
    queue = FakeQueue()
    monkeypatch.setattr(_control, "execQueue", queue, raising=False)
    monkeypatch.setattr(cluster, "ORIGIN", cluster.Origin())
    cluster.keep_origin_share()
    assert queue.lowwatermark == 0.0
    queue.askForPreviousFutures()  # does nothing


class Unanswered:
    """A SCOOP future whose worker is gone: never done, until a late answer comes."""

    def __init__(self):
        self.isDone, self.deleted = False, False

    def _delete(self):
        self.deleted = True


class PipePoller:
    def __init__(self, fd):
        self.fd = fd

    def poll(self, ms):
        select.select([self.fd], [], [], min(ms, 50) / 1000)


def test_a_job_whose_worker_never_answers_runs_on_the_origin_and_that_worker_gets_no_more(
        tmp_path, scoop_logger, monkeypatch, caplog, capsys):
    sent = []
    cluster.route_log(str(tmp_path / "scoop.log"))
    monkeypatch.setattr(cluster, "ORIGIN", cluster.Origin())
    monkeypatch.setattr(cluster, "running", lambda: True)
    monkeypatch.setattr(cluster, "size", lambda: 3)
    monkeypatch.setattr(cluster, "check", lambda: True)
    monkeypatch.setattr(cluster, "keep_origin_share", lambda: None)
    monkeypatch.setattr(cluster, "update", lambda: None)
    monkeypatch.setattr(cluster, "submit", lambda fn, job: sent.append(Unanswered()) or sent[-1])
    monkeypatch.setattr(cluster, "poller", lambda fd: PipePoller(fd))
    monkeypatch.setattr(cluster, "LOST_SLACK_S", 0.0)
    workers = Workers()
    assert workers.width == 3 and workers.free == [0, 1, 2]
    workers.start(2, lambda job: job * 10, 7, "the job", 0.2)  # worker 2 never answers
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gp_losses"):
        (done,) = workers.wait()
    assert time.monotonic() - began >= 0.2  # not before its limit
    assert (done.worker, done.tag, done.value) == (2, "the job", 70)  # run again, on the origin
    assert sent[0].deleted  # abandoned: a late answer is dropped
    assert workers.lost == [2] and workers.live == [0, 1] and workers.free == [0, 1]
    assert cluster.ORIGIN.lost == 1 and cluster.live_workers() == 2 and Workers().width == 2  # the next map
    assert "worker 2 gave no answer within its job's time limit: taken as lost" in caplog.text
    assert "taken as lost" in (tmp_path / "scoop.log").read_text()  # once there too
    workers.start(1, lambda job: job, 1, "another", 0.2)  # the last remote one is lost too
    with caplog.at_level(logging.WARNING, logger="gp_losses"):
        (done,) = workers.wait()
    assert done.value == 1 and workers.live == [0] and "the search goes on at the origin's pace" in caplog.text
    workers.start(0, lambda job: job + 1, 1, "on the origin", None)
    assert workers.wait()[0].value == 2
    workers.close()
    assert cluster.status() == {"workers": {"size": 3, "lost": 2, "live": 1}}
    assert "SCOOP warning" not in capsys.readouterr().err  # the terminal has it once, from gp_losses' log
    assert Workers().width == 1  # every remote worker lost: the origin alone


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
