"""Proxy evaluation with fault isolation: a failing candidate is a result, never a crash.

Training stops at the first non-finite loss value (status `invalid`, the paper's early stop,
section 3.2) or at a loss with no gradient (`invalid` too); a network whose outputs end
non-finite is `invalid` as the task reports it; an exception, or a result the task should not
have returned (a score outside [0, 1], a metric that is not a number), becomes status `error`
with a message that names the task and the value; a candidate past `timeout_s` becomes
`timeout`. Only `ok` carries a score; every other status has score None.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading
import time
from typing import Any, Callable, Dict, Iterator, TypeVar

import torch

from gp_losses.core.errors import describe
from gp_losses.outcomes import Training

T = TypeVar("T")


class InvalidLoss(Exception):
    """A non-finite loss value during proxy training."""


class CandidateTimeout(Exception):
    """The candidate ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CandidateTimeout in this (main) thread after `seconds`, also inside a sleep.

    Uses SIGALRM, so it applies in the main thread of a Unix process (serial runs and workers
    both run candidates there); elsewhere it is a no-op. Use it through call_with_time_limit,
    which does not mistake work that finished for a timeout.
    """
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise CandidateTimeout(f"time limit of {seconds:g} s reached")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # an alarm raised during the reset must not leave our handler installed
            signal.signal(signal.SIGALRM, previous)


def call_with_time_limit(fn: Callable[[], T], seconds: float) -> T:
    """fn() under a time limit: its value, or CandidateTimeout when the limit came first.

    An alarm that fires after fn returned, while the timer is being reset, does not turn the
    finished work into a timeout: the value is kept and returned.
    """
    done = []
    try:
        with time_limit(seconds):
            done.append(fn())
    except CandidateTimeout:
        if not done:
            raise
    return done[0]


class GuardedLoss:
    """Wraps a compiled loss: counts calls and, with `stop_invalid`, raises InvalidLoss on a
    non-finite value (checked on the scalar, which costs one device sync per iteration).
    A value without a gradient where one is being recorded (a loss that never uses the
    prediction) raises InvalidLoss too: there is nothing to train with."""

    def __init__(self, loss: Callable[..., torch.Tensor], stop_invalid: bool = True) -> None:
        self.loss = loss
        self.stop_invalid = stop_invalid
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        value = self.loss(*args, **kwargs)
        if torch.is_grad_enabled() and not value.requires_grad:
            raise InvalidLoss("the loss does not depend on the prediction: it has no gradient")
        if self.stop_invalid and not math.isfinite(float(value.detach())):
            raise InvalidLoss(f"loss is {float(value.detach())} at iteration {self.calls}")
        return value


def proxy_evaluate(task: Any, loss: Callable[..., torch.Tensor], seed: int,
                   timeout_s: float, stop_invalid: bool = True) -> Training:
    """Train `task` with `loss`: how it ended (status, score, metrics, iterations, error, seconds)."""
    guarded = GuardedLoss(loss, stop_invalid)
    start = time.perf_counter()
    out: Dict[str, Any] = {"status": "ok", "score": None, "metrics": {}, "error": None}
    try:
        result = call_with_time_limit(lambda: task.train(guarded, seed), timeout_s)
    except InvalidLoss as exc:
        out.update(status="invalid", error=str(exc))
    except CandidateTimeout as exc:
        out.update(status="timeout", error=str(exc))
    except Exception as exc:  # a failing candidate must not stop the search
        out.update(status="error", error=describe(exc))
    else:
        out.update(checked_result(task, result))
    out.setdefault("iterations", guarded.calls)
    return Training(seconds=time.perf_counter() - start, **out)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def checked_result(task: Any, result: Any) -> Dict[str, Any]:
    """status, score, metrics, iterations and error from a task's TrainResult, checked: a
    score must be a finite number in [0, 1] and every metric a finite number, else `error`."""
    name = getattr(task, "name", "") or type(task).__name__

    def bad(what: str) -> Dict[str, Any]:
        return {"status": "error", "score": None, "metrics": {},
                "error": f"task {name!r} returned {what}"}

    status, iterations = getattr(result, "status", None), getattr(result, "iterations", None)
    if not isinstance(iterations, numbers.Integral):
        return bad(f"{result!r}: expected a gp_losses.contract.TrainResult with an integer `iterations`")
    if status == "invalid":
        return {"status": "invalid", "score": None, "metrics": {}, "iterations": int(iterations),
                "error": getattr(result, "error", None) or f"task {name!r} reported an invalid training"}
    if status != "ok":
        return bad(f"status {status!r}: expected 'ok' or 'invalid'")
    score, metrics = result.score, result.metrics
    if not is_number(score) or not 0 <= score <= 1:
        return bad(f"score {score!r}: a score must be a finite number in [0, 1]")
    if not isinstance(metrics, dict):
        return bad(f"metrics {metrics!r}: expected a dict of metric names to numbers")
    for key, value in metrics.items():
        if not is_number(value):
            return bad(f"metric {key!r} = {value!r}: a metric must be a finite number")
    return {"status": "ok", "score": float(score), "metrics": {k: float(v) for k, v in metrics.items()},
            "iterations": int(iterations), "error": None}
