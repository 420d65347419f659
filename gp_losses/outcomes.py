"""What a job can end as, and which outcomes are facts about a loss.

A protocol run ends passed or rejected with a reason; a proxy training ends with a status.
Deterministic outcomes (the same loss gives the same answer every time) are facts about the
loss: the protocol cache keeps them and an equivalent loss may reuse them. Transient ones — a
timeout, an exception, a process that died — say something about that one run: they are
recorded, never cached, never reused, and never scored.

Plain data only (no torch), so that processes which only relay jobs stay light.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Mapping, Optional, Tuple

from gp_losses.core.errors import RunFailed

REASONS = ("no_prediction", "no_target", "no_interaction", "nonfinite", "zero_grad", "low_gain",
           "monotone", "unbounded", "timeout", "error")
"""Why a candidate is rejected; `logbook.csv` counts each."""

STATIC = frozenset({"no_prediction", "no_target", "no_interaction"})
"""Reasons decided without running the protocol (rejection.static_reason)."""

TRANSIENT = frozenset({"timeout", "error"})
"""Protocol reasons and training statuses that are not facts about the loss."""

@dataclass(frozen=True)
class ProtocolResult:
    """How one candidate tree fared in the loss-rejection protocol (or the static checks).
    `cached`: the answer came from a worker's protocol cache, not from a protocol run."""

    passed: bool
    reason: Optional[str] = None
    gain: Optional[float] = None
    fingerprint: Tuple[float, ...] = ()
    steps: int = 0
    seconds: float = 0.0
    error: Optional[str] = None
    cached: bool = False

    @property
    def cacheable(self) -> bool:
        """Whether it is a fact about the loss: passed, or rejected for a deterministic reason."""
        return self.passed or self.reason not in TRANSIENT

    @property
    def transient_failure(self) -> bool:
        """Whether it says something about that one run only: a timeout, an error."""
        return not self.passed and self.reason in TRANSIENT

    def to_dict(self) -> Dict[str, Any]:
        """As JSON (`gp-losses probe`)."""
        return {"passed": self.passed, "reason": self.reason, "gain": self.gain,
                "fingerprint": list(self.fingerprint), "steps": self.steps,
                "seconds": round(self.seconds, 6), "error": self.error}


@dataclass(frozen=True)
class Training:
    """How one proxy training ended: `ok` with a score, else `invalid` (the loss made the
    network's outputs non-finite), `error` or `timeout`, with the error; where it ran."""

    status: str
    score: Optional[float] = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    iterations: int = 0
    error: Optional[str] = None
    seconds: float = 0.0
    worker: Optional[str] = None
    device: Optional[str] = None

    @property
    def reusable(self) -> bool:
        """Whether an equivalent loss may reuse it (`ok` or `invalid`: facts about the loss)."""
        return self.status not in TRANSIENT

    def to_dict(self) -> Dict[str, Any]:
        """As JSON (retrain/trainings.jsonl, `gp-losses train`); where it ran, when known."""
        out = {"status": self.status, "score": self.score, "metrics": dict(self.metrics),
               "iterations": self.iterations, "error": self.error, "seconds": self.seconds}
        out.update({k: v for k, v in (("worker", self.worker), ("device", self.device)) if v is not None})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Training":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def training_failure(status: str, error: str, seconds: float = 0.0) -> Training:
    """The result of a proxy training that ended without a score."""
    return Training(status, error=error, seconds=seconds)


class FailureWatch:
    """The last outcomes of each kind of job — None, or the failure's message — to stop a run
    whose jobs mostly fail (`search.max_failed_share` of the last `search.failure_window`)."""

    KINDS = {"training": "proxy evaluations", "protocol": "loss-rejection protocol runs"}

    def __init__(self, window: int, share: float) -> None:
        self.share = share
        self.recent: Dict[str, Deque[Optional[str]]] = {
            kind: collections.deque(maxlen=window) for kind in self.KINDS}

    def add(self, kind: str, failure: Optional[str]) -> None:
        self.recent[kind].append(failure)

    def check(self, kind: str, needed: int) -> None:
        """RunFailed, with the most frequent message, when more than `share` of the last jobs
        of `kind` failed, once at least `needed` of them have run."""
        window = self.recent[kind]
        failures = [message for message in window if message]
        if len(window) < max(1, needed) or len(failures) <= self.share * len(window):
            return
        message, count = collections.Counter(failures).most_common(1)[0]
        raise RunFailed(f"{len(failures)} of the last {len(window)} {self.KINDS[kind]} failed (more "
                        f"than search.max_failed_share = {self.share:g}); the most frequent error "
                        f"({count}x): {message}")


def branch_counts(records) -> Dict[str, Dict[str, Any]]:
    """Per loss branch, from a run's evaluations.jsonl records: the candidates `explored`,
    those that `passed` (the new trees of the individuals made: an offspring's copied branch
    is not a candidate) and those `rejected`, by reason."""
    out: Dict[str, Dict[str, Any]] = {}

    def entry(name: str) -> Dict[str, Any]:
        return out.setdefault(name, {"explored": 0, "passed": 0, "rejected": {}})

    for record in records:
        if "branch" in record:  # a rejected candidate
            e = entry(record["branch"])
            e["rejected"][record["reason"]] = e["rejected"].get(record["reason"], 0) + 1
            e["explored"] += 1
        elif isinstance(record.get("expr"), dict) and "promoted" not in record:  # an individual: each new tree passed
            for name, origin in zip(record["expr"], record.get("origin") or [{}] * len(record["expr"])):
                e = entry(name)
                if origin.get("op") != "copy":
                    e["passed"] += 1
                    e["explored"] += 1
    for e in out.values():
        e["rejected"] = {r: e["rejected"][r] for r in REASONS if r in e["rejected"]}
    return out

