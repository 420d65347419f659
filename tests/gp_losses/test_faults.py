"""No failure becomes a result: faults injected into a task (tests/toy_tasks.py) end as
recorded outcomes, never as scores, cached decisions or reused values; a task that cannot be
set up, or that fails most of its jobs, stops the run with its own message."""

import dataclasses
import json
import signal
import time

import pytest
from search_helpers import FAST, IN_PROCESS, cli, lines, status

from gp_losses import evaluate, sandboxed
from gp_losses.config import dump, to_dict
from gp_losses.context import build_context, load_run_config
from gp_losses.core.errors import RunFailed, TaskSetupError
from gp_losses.evaluate import CandidateTimeout, call_with_time_limit, proxy_evaluate
from gp_losses.evolution import Evolution
from gp_losses.jobs import close_sandbox, share
from gp_losses.messages import Fact, Made, RunSpec
from gp_losses.outcomes import ProtocolResult
from gp_losses.population import Slot
from gp_losses.rundir import RunDir
from gp_losses.sandboxed import SandboxState
from gp_losses.scheduler import Batch
from gp_losses.driver import run_search
from gp_losses.space import SearchSpace
from gp_losses.contract import TrainResult
from tasks.cls import DigitsTask

FAULTY = "toy_tasks:FaultyDigits"
CE = "Neg(Mul(y, Log(yhat)))"


def _fault(fault, at=4, **options):
    return [f"task.options.fault={fault}", f"task.options.fault_eval={at}", "task.options.run_seed=0",
            *(f"task.options.{k}={v}" for k, v in options.items())]


@pytest.mark.parametrize("fault, status_, message, isolate", [
    ("raise", "error", "injected failure", False),
    ("nan", "error", "task 'faulty' returned score nan", False),
    ("score", "error", "task 'faulty' returned score 7.5: a score must be a finite number in [0, 1]", False),
    ("metric", "error", "task 'faulty' returned metric 'accuracy' = 'high'", False),
    ("hang", "timeout", "time limit of 2 s reached", True),
    ("segv", "error", "process died: signal 11 (SIGSEGV); 2 attempt(s)", True),
])  # a process that exits (code 3) every time: test_resume.py's SCOOP run, with proxy.retries=0
def test_a_failing_candidate_is_recorded_and_the_search_finishes(tmp_path, fault, status_, message, isolate):
    out = tmp_path / "run"
    start = time.time()
    overrides = FAST + ["search.evaluations=6", "proxy.timeout_s=2", f"proxy.isolate={isolate}"]
    summary = run_search(FAULTY, out=str(out), seed=0, overrides=overrides + _fault(fault))
    assert time.time() - start < 120
    assert status(out)["state"] == "finished"
    (record,) = [r for r in lines(out) if r.get("eval") == 4]
    assert record["status"] == status_ and record["score"] is None and record["metrics"] == {}
    assert message in record["error"]
    assert all(h["eval"] != 4 for h in json.loads((out / "hall_of_fame.json").read_text()))
    assert all(0 <= h["score"] <= 1 for h in summary["hall_of_fame"])
    others = [r for r in lines(out) if "eval" in r and r["eval"] != 4]
    assert others and all(r["status"] in ("ok", "invalid") for r in others)


def test_a_process_that_dies_once_is_survived(tmp_path):
    out = tmp_path / "run"
    run_search(FAULTY, out=str(out), seed=0, overrides=FAST + ["search.evaluations=6"]
               + _fault("segv", fault_dir=str(tmp_path)))
    (record,) = [r for r in lines(out) if r.get("eval") == 4]
    assert record["status"] == "ok" and 0 <= record["score"] <= 1
    assert (tmp_path / "fault").exists()  # the first attempt did crash


def test_nan_logits_with_stop_invalid_off_are_not_scored():
    task = DigitsTask(DigitsTask.Options(iterations=20))
    space = SearchSpace(task.branches)
    blowup = space.compile(space.parse("Mul(Exp(Exp(Exp(Exp(Add(one, one))))), Mul(y, yhat))"))
    result = proxy_evaluate(task, blowup, seed=0, timeout_s=60, stop_invalid=False)
    assert result.status == "invalid" and result.score is None
    assert "not finite" in result.error


@pytest.fixture
def faulty_evolution(tmp_path):
    """An Evolution of the faulty task whose trainings hang once (then train normally)."""
    config = load_run_config(FAULTY, None, FAST + ["proxy.timeout_s=3", "search.max_attempts=6"]
                             + _fault("hang", at=-2, fault_dir=str(tmp_path)))
    context = build_context(config)
    evo = Evolution(context, RunDir.create(tmp_path / "run", dump(config)))
    share(evo.spec)
    yield evo
    close_sandbox()


def _slots(evo, n, expr=CE):
    (tree,) = evo.space.parse(expr)
    return [Slot(None, [tree], [(1.0, 2.0)], [Made("init")]) for _ in range(n)]


def _batch(evo, slots):
    made = Batch(len(slots))
    for slot in slots:
        evo.dedupe(slot, made)
    batch = evo.scheduler.trainings(made.children, made.jobs)
    return evo.evaluate(batch), batch.children


def test_a_timeout_is_not_reused_and_an_equivalent_loss_trains_afresh(faulty_evolution):
    evo = faulty_evolution
    # one batch: the loss times out; its equivalent in the same batch is left unscored
    (first, twin), children = _batch(evo, _slots(evo, 2))
    assert first["status"] == "timeout" and first["score"] is None
    assert twin["status"] == "unscored" and twin["score"] is None
    evo.age(children)
    assert len(evo.state.population) == 1 and not evo.state.known
    # a later batch: the same loss is trained again (the fault happened once) and scored
    (again,), _ = _batch(evo, _slots(evo, 1))
    assert again["status"] == "ok" and again["eval"] == 1 and 0 <= again["score"] <= 1
    (reuse,), _ = _batch(evo, _slots(evo, 1))
    assert reuse["status"] == "reused" and reuse["score"] == again["score"]


def test_a_transient_protocol_outcome_is_not_cached(faulty_evolution, monkeypatch):
    """A protocol run that timed out is run again for the same candidate, not looked up; the
    pass that follows is remembered."""
    state = SandboxState(RunSpec(to_dict(faulty_evolution.cfg)), 0)
    (tree,) = state.context.space.parse(CE)
    runs = []

    def protocol(state_, branch, tree_, optimize):
        runs.append(str(tree_))
        if len(runs) == 1:
            return ProtocolResult(False, "timeout", error="time limit of 1 s reached")
        return ProtocolResult(True, None, 0.9, (1.0, 2.0), 10)

    monkeypatch.setattr(sandboxed, "protocol_result", protocol)
    first, second, third = (state.check(0, tree) for _ in range(3))
    assert first.reason == "timeout" and second.passed and third.passed
    assert runs == [CE, CE]  # checked again after the timeout; the pass came from the cache
    assert third.cached and not second.cached


def test_a_worker_takes_other_workers_protocol_facts_and_not_their_failures(faulty_evolution, monkeypatch):
    """Results another worker found (handed on with a rejection job) answer from the cache,
    the same as a run here would; a timeout handed on is not taken."""
    state = SandboxState(RunSpec(to_dict(faulty_evolution.cfg)), 0)
    trees = dict(zip(("ce", "sq"), state.context.space.parse(CE) + state.context.space.parse("Neg(Mul(y, Square(yhat)))")))
    runs = []
    monkeypatch.setattr(sandboxed, "protocol_result", lambda s_, b, tree, o: runs.append(str(tree)) or
                        ProtocolResult(False, "low_gain", 0.1, (3.0, 4.0), 100))
    passed = ProtocolResult(True, None, 0.9, (1.0, 2.0), 10, seconds=0.5)
    timeout = ProtocolResult(False, "timeout", error="time limit of 1 s reached")
    state.learn((Fact(0, str(trees["ce"]), passed), Fact(0, str(trees["sq"]), timeout)))
    ce, sq = state.check(0, trees["ce"]), state.check(0, trees["sq"])
    assert runs == [str(trees["sq"])]  # only the one whose fact was not handed on
    assert ce.cached and ce == dataclasses.replace(passed, seconds=0.0, cached=True)
    assert sq.reason == "low_gain" and not sq.cached


def test_a_run_whose_trainings_mostly_fail_stops_with_the_error(tmp_path):
    out = tmp_path / "run"
    overrides = FAST + ["search.failure_window=4", IN_PROCESS] + _fault("raise", at=-2)
    with pytest.raises(RunFailed, match=r"4 of the last 4 proxy evaluations failed .* injected failure"):
        run_search(FAULTY, out=str(out), seed=0, overrides=overrides)
    state = status(out)
    assert state["state"] == "failed" and "injected failure" in state["reason"]
    assert state["evaluations"] == 4 and json.loads((out / "hall_of_fame.json").read_text()) == []
    assert [r["status"] for r in lines(out) if "eval" in r] == ["error"] * 4


def test_a_task_whose_protocol_always_fails_stops_the_run_early(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match="loss-rejection protocol runs failed.*injected probe failure"):
        run_search(FAULTY, out=str(out), seed=0, overrides=FAST + ["task.options.probe_fault=true", IN_PROCESS])
    assert "injected probe failure" in status(out)["reason"]


def test_a_task_that_cannot_be_set_up_stops_the_run_at_once_with_exit_2(tmp_path):
    out = tmp_path / "run"
    start = time.time()
    proc = cli("search", "--task", "pose", "--set", "task.options.data_root=/does/not/exist",
               "--out", str(out))
    _, err = proc.communicate(timeout=60)
    assert time.time() - start < 30 and proc.returncode == 2
    assert "/does/not/exist" in err and "/does/not/exist" in status(out)["reason"]
    assert status(out)["state"] == "failed" and lines(out) == []


def test_setup_runs_outside_the_candidate_time_limits(tmp_path):
    out = tmp_path / "run"
    overrides = FAST + ["search.evaluations=4", "task.options.setup_fault=slow", "proxy.timeout_s=1",
                        "protocol.timeout_s=1"]
    run_search(FAULTY, out=str(out), seed=0, overrides=overrides)  # setup takes 3 s
    assert {r["status"] for r in lines(out) if "eval" in r} <= {"ok", "invalid"}


@pytest.mark.parametrize("isolate", [True, False])
def test_a_setup_error_is_a_task_setup_error(tmp_path, isolate):
    with pytest.raises(TaskSetupError, match="'/no/such/digits' not found") as info:
        run_search(FAULTY, out=str(tmp_path / "run"), overrides=FAST + [
            "task.options.setup_fault=raise", f"proxy.isolate={isolate}"])
    assert info.value.exit_code == 2 and status(tmp_path / "run")["state"] == "failed"


def test_the_time_limit_never_reports_finished_work_as_a_timeout(monkeypatch):
    """The alarm goes off while the timer is being reset, after the training returned."""
    real = signal.setitimer

    def late_alarm(which, seconds, *interval):
        previous = real(which, seconds, *interval)
        if seconds == 0:  # as if the alarm had fired just before this reset
            signal.raise_signal(signal.SIGALRM)
        return previous

    class Quick:
        name = "quick"

        def train(self, loss, seed):
            return TrainResult(0.5, {"m": 0.5}, 1)

    monkeypatch.setattr(evaluate.signal, "setitimer", late_alarm)
    result = proxy_evaluate(Quick(), loss=None, seed=0, timeout_s=5.0)
    assert result.status == "ok" and result.score == 0.5
    with pytest.raises(CandidateTimeout):  # work that does not finish still times out
        call_with_time_limit(lambda: time.sleep(5), 0.2)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # the handler was put back
