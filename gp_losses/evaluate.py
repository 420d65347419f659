"""Proxy evaluation with fault isolation: a failing candidate is a result, never a crash.

Training stops at the first non-finite loss value (status `invalid`, the paper's early stop,
section 3.2) or at a loss with no gradient (`invalid` too); an exception becomes status
`error` with its message, and a candidate past `timeout_s` becomes `timeout`. Each of these
gets the worst score, 0.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, Mapping

import torch

STATUSES = ("ok", "invalid", "error", "timeout")


class InvalidLoss(Exception):
    """A non-finite loss value during proxy training."""


class CandidateTimeout(Exception):
    """The candidate ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CandidateTimeout in this (main) thread after `seconds`, also inside a sleep.

    Uses SIGALRM, so it applies in the main thread of a Unix process (serial runs and SCOOP
    workers both run candidates there); elsewhere it is a no-op.
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
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
                   timeout_s: float, stop_invalid: bool = True) -> Dict[str, Any]:
    """Train `task` with `loss`; a dict with status, score, metrics, iterations, seconds."""
    guarded = GuardedLoss(loss, stop_invalid)
    start = time.perf_counter()
    out: Dict[str, Any] = {"status": "ok", "score": 0.0, "metrics": {}, "error": None}
    try:
        with time_limit(timeout_s):
            result = task.train(guarded, seed)
        score = float(result.score)
        if not math.isfinite(score):
            out.update(status="invalid", error=f"non-finite score {score}")
        else:
            out.update(score=score, metrics=_finite(result.metrics), status=result.status)
        out["iterations"] = int(result.iterations)
    except InvalidLoss as exc:
        out.update(status="invalid", error=str(exc), iterations=guarded.calls)
    except CandidateTimeout as exc:
        out.update(status="timeout", error=str(exc), iterations=guarded.calls)
    except Exception as exc:  # a failing candidate must not stop the search
        last = traceback.extract_tb(exc.__traceback__)[-1]
        out.update(status="error", iterations=guarded.calls,
                   error=f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})")
    if out["status"] != "ok":
        out["score"] = 0.0
    out["seconds"] = time.perf_counter() - start
    return out


def _finite(metrics: Mapping[str, float]) -> Dict[str, float]:
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
