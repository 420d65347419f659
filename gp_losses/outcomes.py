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
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple

from gp_losses.core.errors import RunFailed

REASONS = ("no_prediction", "no_target", "no_interaction", "nonfinite", "zero_grad", "low_gain",
           "monotone", "unbounded", "timeout", "error")
"""Why a candidate is rejected; `logbook.csv` counts each."""

STATIC = frozenset({"no_prediction", "no_target", "no_interaction"})
"""Reasons decided without running the protocol (rejection.static_reason)."""

TRANSIENT = frozenset({"timeout", "error"})
"""Protocol reasons and training statuses that are not facts about the loss."""

@dataclass
class ProtocolResult:
    passed: bool
    reason: Optional[str] = None
    gain: Optional[float] = None
    fingerprint: Tuple[float, ...] = ()
    steps: int = 0
    seconds: float = 0.0

    def to_dict(self, error: Optional[str] = None) -> Dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "gain": self.gain,
                "fingerprint": list(self.fingerprint), "steps": self.steps,
                "seconds": round(self.seconds, 6), "error": error}


def training_failure(status: str, error: str, seconds: float = 0.0) -> Dict[str, Any]:
    """The result of a proxy training that ended without a score."""
    return {"status": status, "score": None, "metrics": {}, "iterations": 0, "error": error,
            "seconds": seconds}


def cacheable(result: Dict[str, Any]) -> bool:
    """Whether a protocol result is a fact about the loss (passed, or a deterministic reason)."""
    return result["passed"] or result["reason"] not in TRANSIENT


def reusable(result: Dict[str, Any]) -> bool:
    """Whether an equivalent loss may reuse this training result (`ok` or `invalid`)."""
    return result["status"] not in TRANSIENT


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
        elif isinstance(record.get("expr"), dict):  # an individual: each new tree passed
            for name, origin in zip(record["expr"], record.get("origin") or [{}] * len(record["expr"])):
                e = entry(name)
                if origin.get("op") != "copy":
                    e["passed"] += 1
                    e["explored"] += 1
    for e in out.values():
        e["rejected"] = {r: e["rejected"][r] for r in REASONS if r in e["rejected"]}
    return out

