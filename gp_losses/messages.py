"""What the origin sends its workers, and what comes back: frozen, named, plain data.

    origin -> worker    CheckJob   ranges of candidate streams to check, for about `seconds`
                        TrainJob   one loss to train with a seed
                        ProtocolJob, DescribeJob   one tree's protocol; one candidate, made
    worker -> origin    [RangeDone] per range of a CheckJob; a Training (gp_losses/outcomes.py)
    worker -> sandbox   Init, then the jobs; sandbox -> worker: Ready or SetupFailed, then answers

A job names its run by `RunSpec.key`; the spec itself (the config, as plain data) reaches each
worker once, when the run starts (gp_losses/jobs.py), and its sandbox once, when it is built
(gp_losses/sandbox.py). The same job objects go on from a worker to its sandbox. No torch here:
processes that only relay jobs stay small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from gp_losses.outcomes import ProtocolResult


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to build a run's task: the resolved config (plain data), the run's
    id (which GPU slots its workers on one node share) and the split its trainings score."""

    config: Mapping[str, Any]
    run_id: str = "local"
    split: str = "val"
    key: str = field(init=False, compare=False)
    """Names the spec in jobs: a hash of the rest, computed once."""

    def __post_init__(self) -> None:
        text = json.dumps([self.config, self.run_id, self.split], sort_keys=True)
        object.__setattr__(self, "key", hashlib.sha1(text.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Made:
    """How a candidate tree was made (gp_losses/variation.py): `init` (random), or an
    offspring's `copy`, `reinit` or `mutate` with its mutation steps."""

    op: str
    steps: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"op": self.op, "steps": list(self.steps)}


@dataclass(frozen=True)
class Range:
    """Candidates lo .. hi-1 of one branch's stream of one offspring slot (gp_losses/streams.py):
    candidate i is made from a generator seeded by (run seed, slot, branch, i)."""

    slot: int
    branch: int
    parent: Optional[str]
    """The parent's tree for this branch; None: random candidates (initialization)."""
    lo: int
    hi: int
    first_only: bool
    """Whether the range ends at its first passing candidate."""

    def one(self, index: int) -> "Range":
        """The range of candidate `index` alone."""
        return Range(self.slot, self.branch, self.parent, index, index + 1, self.first_only)


@dataclass(frozen=True)
class Checked:
    """One candidate checked: its index in its stream, its tree, how it was made, the outcome;
    for a rejected one, its line in evaluations.jsonl as JSON members, but the index and batch
    that the origin gives it (`record`: made where the candidate was checked, off the origin)."""

    index: int
    expr: str
    made: Made
    result: ProtocolResult
    record: Optional[str] = None

    def rejected_fields(self, branch: str) -> Dict[str, Any]:
        """Its evaluations.jsonl line as a rejected candidate of `branch`, but index and batch."""
        result = self.result
        fields = {"branch": branch, "expr": self.expr, "status": "rejected", "reason": result.reason,
                  "gain": result.gain, "protocol_steps": result.steps, "seconds": round(result.seconds, 6),
                  "op": self.made.op, "mutations": list(self.made.steps)}
        if result.error:
            fields["error"] = result.error
        return fields

    def with_record(self, branch: str) -> "Checked":
        """This candidate with its `record`, if it was rejected."""
        if self.result.passed:
            return self
        return dataclasses.replace(self, record=json.dumps(self.rejected_fields(branch))[1:-1])


@dataclass(frozen=True)
class RangeDone:
    """A worker's answer for one Range: candidates lo .. end-1 checked, in `seconds`."""

    end: int
    checked: Tuple[Checked, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Fact:
    """A protocol result another worker found, for this worker's cache."""

    branch: int
    expr: str
    result: ProtocolResult


@dataclass(frozen=True)
class CheckJob:
    """Check the ranges in order, each until its first pass where it says so, for about
    `seconds`; `known` are protocol results found elsewhere since this worker's last job."""

    run: str
    ranges: Tuple[Range, ...]
    seconds: float
    known: Tuple[Fact, ...] = ()


@dataclass(frozen=True)
class DescribeJob:
    """Make candidate `index` of a range's stream without checking it: (expr, Made)."""

    run: str
    range: Range
    index: int


@dataclass(frozen=True)
class TrainJob:
    """Proxy-train one loss ({branch: expression}) with `seed`: a Training. `rung` > 0 trains
    it on that fidelity rung's longer schedule (fidelity.rungs)."""

    run: str
    exprs: Mapping[str, str]
    seed: int
    rung: int = 0


@dataclass(frozen=True)
class ProtocolJob:
    """The protocol on one branch tree (`optimize` False: only its fingerprint): a ProtocolResult."""

    run: str
    branch: int
    expr: str
    optimize: bool = True


Job = Union[CheckJob, DescribeJob, TrainJob, ProtocolJob]


# --- between a worker and its sandbox (gp_losses/sandbox.py, gp_losses/sandboxed.py) ----------
@dataclass(frozen=True)
class Init:
    """The first message to a sandbox: the run, the worker's slot on its node, sys.path."""

    spec: RunSpec
    index: int
    path: Tuple[str, ...]


@dataclass(frozen=True)
class Ready:
    """The sandbox's answer to Init: the task is set up on `device`."""

    device: str


@dataclass(frozen=True)
class SetupFailed:
    """The sandbox's answer to Init when the task cannot be set up (then it exits)."""

    message: str
    bad_input: bool


# --- between a process and its sandbox starter (gp_losses/sandbox.py: Starter) ----------------
FORK_ANSWER = "!cii"
"""A starter's answers, packed with struct: kind (STARTED or ENDED), pid, exit code (as
subprocess gives it: -N for signal N). A request is the working directory and environment
(JSON), with the sandbox's four descriptors (its two pipe ends, stdout, stderr)."""
STARTED, ENDED = b"S", b"E"
