"""What a job can end as, and which outcomes are facts about a loss.

A protocol run ends passed or rejected with a reason; a proxy training ends with a status.
Deterministic outcomes (the same loss gives the same answer every time) are facts about the
loss: the protocol cache keeps them and an equivalent loss may reuse them. Transient ones — a
timeout, an exception, a process that died — say something about that one run: they are
recorded, never cached, never reused, and never scored.

Plain data only (no torch), so that processes which only relay jobs stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

REASONS = ("no_prediction", "no_target", "no_interaction", "nonfinite", "zero_grad", "low_gain",
           "monotone", "unbounded", "timeout", "error")
"""Why a candidate is rejected; `logbook.csv` counts each."""

TRANSIENT = frozenset({"timeout", "error"})
"""Protocol reasons and training statuses that are not facts about the loss."""

STATUSES = ("ok", "invalid", "error", "timeout")
"""How a proxy training ends; only `ok` has a score."""


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
