"""The jobs as a worker runs them: each goes on to the worker's sandbox, a child process that
holds the task (gp_losses/sandbox.py), so that a job which kills its process or hangs costs
that job only. Without `python -m scoop` the same functions run in the origin.

A run's spec reaches each worker once: `start_workers` shares it (SCOOP broadcasts it to every
worker, those that join later too) and jobs name it by its key. No torch here: a worker only
relays jobs and stays small.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from typing import Any, Dict, List, Optional

from gp_losses import cluster
from gp_losses.messages import Checked, CheckJob, DescribeJob, ProtocolJob, RangeDone, RunSpec, TrainJob
from gp_losses.outcomes import ProtocolResult, Training, training_failure
from gp_losses.sandbox import JobTimeout, ProcessDied, hard_limit, open_sandbox
from gp_losses.workers import parallel_map

SPEC_WAIT_S = 60.0
"""How long a worker waits for a run's spec to arrive (SCOOP's shared constants)."""


class WorkerProcess:
    """What this process keeps as a worker (one per process): the specs of the runs it has
    been given, its sandbox (one run at a time), and its GPU slot on this node per run."""

    def __init__(self) -> None:
        self.specs: Dict[str, RunSpec] = {}
        self.sandbox: Any = None
        self.sandbox_key: Optional[str] = None
        self.slots: Dict[str, int] = {}
        """Run id -> this process's index among the run's workers on this host."""
        self.claimed: List[str] = []
        """Slot files this process holds (removed when it exits)."""

    def spec(self, key: str) -> RunSpec:
        """The spec a job names: given to this process, or shared by the origin."""
        if key not in self.specs:
            spec = cluster.shared_value(_shared_name(key), SPEC_WAIT_S) if cluster.running() else None
            if spec is None:
                raise RuntimeError(f"run spec {key} never reached worker {worker_id()}")
            self.specs[key] = spec
        return self.specs[key]

    def sandbox_for(self, key: str) -> Any:
        """This process's sandbox for the run; any other run's is closed first."""
        if self.sandbox_key != key:
            self.close()
            spec = self.spec(key)
            self.sandbox = open_sandbox(spec, self.slot(spec))
            self.sandbox_key = key
        return self.sandbox

    def slot(self, spec: RunSpec) -> int:
        """This process's GPU slot for the run: claimed once, with an exclusive file, so that
        workers on one node spread over its GPUs; 0 on CPU."""
        if spec.config["proxy"]["device"] == "cpu":
            return 0
        if spec.run_id not in self.slots:
            self.slots[spec.run_id] = self._claim(spec.run_id)
        return self.slots[spec.run_id]

    def _claim(self, run_id: str, limit: int = 4096) -> int:
        base = os.path.join(tempfile.gettempdir(), f"gp_losses-{run_id}")
        for k in range(limit):
            try:
                fd = os.open(f"{base}-slot{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            self.claimed.append(f"{base}-slot{k}")
            return k
        return os.getpid() % limit

    def close(self) -> None:
        """End this process's sandbox (a run is over, or another one starts)."""
        if self.sandbox is not None:
            self.sandbox.close()
        self.sandbox, self.sandbox_key = None, None

    def exit(self) -> None:
        self.close()
        for path in self.claimed:
            with contextlib.suppress(OSError):
                os.remove(path)


PROCESS = WorkerProcess()
atexit.register(PROCESS.exit)


def _shared_name(key: str) -> str:
    return f"gp_losses_run_{key}"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def close_sandbox() -> None:
    """End this process's sandbox: a run (search, retrain) is over."""
    PROCESS.close()


# --- the jobs ---------------------------------------------------------------------------------
def share(spec: RunSpec) -> None:
    """Make `spec` known to this process and, under SCOOP, to every worker."""
    PROCESS.specs[spec.key] = spec
    if cluster.running():
        cluster.share(_shared_name(spec.key), spec)


def start_job(key: str) -> str:
    """Start this worker's sandbox (the task's setup runs there now, not inside a job);
    TaskSetupError if it fails. Returns the worker's id."""
    PROCESS.sandbox_for(key).start()
    return worker_id()


def start_workers(spec: RunSpec) -> List[str]:
    """Share the spec and set the task up in every worker before the first job, so that a task
    that cannot be set up stops the run at once; the ids of the workers that answered."""
    share(spec)
    return parallel_map(start_job, [spec.key] * cluster.live_workers(),
                        item_limit_s=spec.config["proxy"]["setup_timeout_s"])


def protocol_job(job: ProtocolJob) -> ProtocolResult:
    """The rejection protocol for one branch tree, never raising for the candidate's sake
    (TaskSetupError stops the run)."""
    start = time.perf_counter()
    limit = hard_limit(PROCESS.spec(job.run).config["protocol"]["timeout_s"])
    try:
        return PROCESS.sandbox_for(job.run).call(job, limit)
    except JobTimeout as exc:
        reason, error = "timeout", str(exc)
    except ProcessDied as exc:
        reason, error = "error", str(exc)
    return ProtocolResult(False, reason, seconds=time.perf_counter() - start, error=error)


def check_job(job: CheckJob) -> List[RangeDone]:
    """Check candidates of the job's ranges for about `job.seconds` (gp_losses/sandboxed.py).

    If the job kills its process or hangs, it is taken apart: each candidate is checked in a
    job of its own, and the one that cannot be is reported as an error (made again, unchecked,
    to name it). Never raises for a candidate's sake."""
    limit = hard_limit(job.seconds + PROCESS.spec(job.run).config["protocol"]["timeout_s"])
    box = PROCESS.sandbox_for(job.run)
    try:
        return box.call(job, limit)
    except (JobTimeout, ProcessDied):
        pass
    start, out = time.perf_counter(), []
    for part in job.ranges:
        checked: List[Checked] = []
        index, began = part.lo, time.perf_counter()
        while index < part.hi and (time.perf_counter() - start < job.seconds or not (out or checked)):
            try:
                (done,) = box.call(CheckJob(job.run, (part.one(index),), 0.0), limit)
                one = done.checked[0]
            except (JobTimeout, ProcessDied) as exc:
                expr, made = box.call(DescribeJob(job.run, part, index), limit)
                reason = "timeout" if isinstance(exc, JobTimeout) else "error"
                one = Checked(index, expr, made, ProtocolResult(False, reason, error=str(exc)))
            checked.append(one)
            index += 1
            if one.result.passed and part.first_only:
                break
        out.append(RangeDone(index, tuple(checked), time.perf_counter() - began))
    return out


def train_job(job: TrainJob) -> Training:
    """Proxy evaluation of one loss with a seed, never raising for the candidate's sake
    (TaskSetupError stops the run)."""
    start = time.perf_counter()
    config = PROCESS.spec(job.run).config
    limit = hard_limit(config["fidelity"]["timeout_s"] if job.rung else config["proxy"]["timeout_s"])
    try:
        out = PROCESS.sandbox_for(job.run).call(job, limit)
    except JobTimeout as exc:
        out = training_failure("timeout", str(exc), time.perf_counter() - start)
    except ProcessDied as exc:
        out = training_failure("error", str(exc), time.perf_counter() - start)
    return dataclasses.replace(out, worker=worker_id())
