"""Inside a sandbox: the task, set up once, and the jobs run on it; this process dies alone.

A worker's `gp_losses.sandbox.Sandbox` starts this module in a child process and sends it
plain data: first `Init` (the run's spec), then one job at a time (gp_losses/messages.py).
The task is built and set up here, once, before any job and outside every job's time limit;
if that fails, the child says why (`SetupFailed`) and exits, and the run stops. A job that
crashes the process (a segfault, os._exit, an out-of-memory kill) costs only that job: the
sandbox notices the closed pipe and starts a fresh child. `serve_forks` is the other process
that runs this module: the starter that forks sandboxes with these imports done.

    worker -> sandbox   Init, then CheckJob | DescribeJob | ProtocolJob | TrainJob
    sandbox -> worker   Ready | SetupFailed, then each job's answer
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from gp_losses import config as cfg
from gp_losses.context import build_context
from gp_losses.core.errors import InputError, TaskSetupError, describe
from gp_losses.evaluate import CandidateTimeout, call_with_time_limit, proxy_evaluate
from gp_losses.messages import (ENDED, FORK_ANSWER, STARTED, Checked, CheckJob, DescribeJob, Fact, Init, Made,
                                ProtocolJob, Range, RangeDone, Ready, RunSpec, SetupFailed, TrainJob)
from gp_losses.outcomes import ProtocolResult, Training, training_failure
from gp_losses.rejection import Protocol, static_reason
from gp_losses.trees import LossTree, parse_tree
from gp_losses.variation import candidate, candidate_rng

PROTOCOL_CACHE_SIZE = 50_000
"""Protocol results a sandbox remembers (deterministic outcomes only), least recently used out."""


def device_for(kind: str, local_index: int, gpu_count: int) -> str:
    """`auto` is CUDA when a GPU is present; with G GPUs a worker takes GPU local_index mod G."""
    if kind == "cpu" or (kind == "auto" and gpu_count == 0):
        return "cpu"
    if gpu_count == 0:
        raise InputError("proxy.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return f"cuda:{local_index % gpu_count}"


class SandboxState:
    """What a sandbox holds for one run: context, the task on its device (set up), protocol,
    and the protocol cache."""

    def __init__(self, spec: RunSpec, index: int) -> None:
        config = cfg.build(cfg.RunConfig, spec.config)
        torch.set_num_threads(config.proxy.threads)
        self.context = build_context(config)
        gpus = torch.cuda.device_count() if config.proxy.device != "cpu" else 0
        self.device = device_for(config.proxy.device, index, gpus)
        self.task = self.context.make_task(self.device, spec.split)
        self.task.ensure_setup()
        warm_up()
        self.protocol: Optional[Protocol] = None
        if config.search.rejection or config.search.equivalence:
            space = self.context.space
            self.protocol = Protocol(self.task, space.branches, space.operators, config.protocol,
                                     self.context.pareto)
        self.cache: "collections.OrderedDict[Tuple[int, str], ProtocolResult]" = collections.OrderedDict()
        """(branch, expr) -> protocol result, for the deterministic outcomes met here."""
        self.split = spec.split
        self.rung_tasks: Dict[int, Any] = {0: self.task}
        """Fidelity rung -> the task with that rung's options, set up on its first training."""

    def task_for(self, rung: int) -> Any:
        """The task that trains at fidelity rung `rung` (0: the proxy's)."""
        if rung not in self.rung_tasks:
            task = self.context.make_task(self.device, self.split, self.context.rung_options(rung))
            task.ensure_setup()
            self.rung_tasks[rung] = task
        return self.rung_tasks[rung]

    def learn(self, known: Tuple[Fact, ...]) -> None:
        """Take protocol results that other workers found into the cache; only deterministic
        outcomes are cached."""
        for fact in known:
            self._remember((fact.branch, fact.expr), fact.result)

    def _remember(self, key: Tuple[int, str], result: ProtocolResult) -> None:
        if result.cacheable:
            self.cache[key] = dataclasses.replace(result, seconds=0.0)
        while len(self.cache) > PROTOCOL_CACHE_SIZE:
            self.cache.popitem(last=False)

    def check(self, branch: int, tree: LossTree, expr: Optional[str] = None) -> ProtocolResult:
        """The search's decision on one candidate: static checks, this sandbox's cache, then the
        protocol (with `search.rejection` off: passed, with the fingerprint when
        `search.equivalence` wants it). Never raises."""
        search = self.context.config.search
        if search.rejection:
            reason = static_reason(tree, self.context.space.branches[branch])
            if reason:
                return ProtocolResult(False, reason)
            key = (branch, expr or str(tree))
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
                return dataclasses.replace(cached, cached=True)
        elif not search.equivalence:
            return ProtocolResult(True)
        result = protocol_result(self, branch, tree, search.rejection)
        if not search.rejection:  # only the fingerprint was wanted: the first candidate is taken
            return dataclasses.replace(result, passed=True)
        self._remember(key, result)
        return result


def warm_up() -> None:
    """One optimizer step on a dummy tensor, at setup: torch imports some modules (torch._dynamo)
    on an optimizer's first step, and a time limit that fires during that import leaves the
    module half-initialized, failing every job after it in this sandbox (seen with a 1-s
    protocol limit on a loaded machine)."""
    weight = torch.zeros(1, requires_grad=True)
    for optimizer in (torch.optim.SGD([weight], lr=0.1, momentum=0.9), torch.optim.Adam([weight], lr=0.1)):
        weight.sum().backward()
        optimizer.step()


def protocol_result(state: SandboxState, branch: int, tree: LossTree, optimize: bool) -> ProtocolResult:
    """The rejection protocol on one branch tree, never raising."""
    start, error = time.perf_counter(), None
    try:
        result = call_with_time_limit(lambda: state.protocol.check(branch, tree, optimize),
                                      state.context.config.protocol.timeout_s)
    except CandidateTimeout as exc:
        result, error = ProtocolResult(False, "timeout"), str(exc)
    except Exception as exc:  # a failing candidate is a result
        result, error = ProtocolResult(False, "error"), describe(exc)
    if error:
        result = dataclasses.replace(result, seconds=time.perf_counter() - start, error=error)
    return result


def run_protocol(state: SandboxState, job: ProtocolJob) -> ProtocolResult:
    """The protocol on one branch tree given as a string (a fingerprint for `retrain`)."""
    try:
        tree = parse_tree(job.expr, state.context.space.psets[job.branch])
    except Exception as exc:
        return ProtocolResult(False, "error", error=describe(exc))
    return protocol_result(state, job.branch, tree, job.optimize)


def _maker(state: SandboxState, part: Range) -> Callable[[int], Tuple[LossTree, Made]]:
    """index -> (candidate tree, how it was made) for the range's stream."""
    space, seed = state.context.space, state.context.config.seed
    pset = space.psets[part.branch]
    tree = parse_tree(part.parent, pset) if part.parent is not None else None
    return lambda index: candidate(pset, tree, candidate_rng(seed, part.slot, part.branch, index),
                                   space.depth, space.height_limit)


def run_check(state: SandboxState, job: CheckJob) -> List[RangeDone]:
    """Candidates of the job's ranges, in order, each range until its first pass (when the
    range says so), for about `job.seconds` (the candidate under way when time is up is
    finished; at least one is checked); the protocol results other workers found are taken
    into the cache first. The caller hands the unchecked rest of a range out again."""
    state.learn(job.known)
    start = time.perf_counter()
    out: List[RangeDone] = []
    passed = set()
    for part in job.ranges:
        checked: List[Checked] = []
        index = part.lo
        if (part.slot, part.branch) in passed:  # a later range of a stream whose pass this job found
            out.append(RangeDone(index))
            continue
        began = time.perf_counter()
        make = _maker(state, part)
        branch = state.context.space.branches[part.branch].name
        while index < part.hi and (time.perf_counter() - start < job.seconds or not (out or checked)):
            tree, made = make(index)
            expr = str(tree)
            result = state.check(part.branch, tree, expr)
            checked.append(Checked(index, expr, made, result).with_record(branch))
            index += 1
            if result.passed and part.first_only:
                passed.add((part.slot, part.branch))
                break
        out.append(RangeDone(index, tuple(checked), time.perf_counter() - began))
    return out


def run_describe(state: SandboxState, job: DescribeJob) -> Tuple[str, Made]:
    """Candidate `job.index` of the range's stream, made but not checked."""
    tree, made = _maker(state, job.range)(job.index)
    return str(tree), made


def run_training(state: SandboxState, job: TrainJob) -> Training:
    """Proxy evaluation of one loss with a seed, never raising."""
    config = state.context.config
    try:
        loss = state.context.space.compile(state.context.space.parse(dict(job.exprs)))
        task = state.task_for(job.rung)  # a rung's task is set up on its first training, untimed
    except Exception as exc:
        out = training_failure("error", describe(exc))
    else:
        timeout = config.fidelity.timeout_s if job.rung else config.proxy.timeout_s
        out = proxy_evaluate(task, loss, job.seed, timeout, config.search.stop_invalid)
    return dataclasses.replace(out, device=state.device)


def setup_failure(exc: BaseException) -> SetupFailed:
    """Why the task could not be set up, from the exception raised."""
    bad_input = isinstance(exc, InputError)
    return SetupFailed(f"task setup failed: {exc if bad_input else describe(exc)}", bad_input)


RUN: Dict[type, Callable[[SandboxState, Any], Any]] = {
    CheckJob: run_check, DescribeJob: run_describe, ProtocolJob: run_protocol, TrainJob: run_training}


class InProcess:
    """Runs jobs in this process (`proxy.isolate: false`), with the Sandbox's interface."""

    def __init__(self, spec: RunSpec, index: int = 0) -> None:
        self.spec, self.index = spec, index
        self.state: Optional[SandboxState] = None

    def start(self) -> None:
        if self.state is None:
            try:
                self.state = SandboxState(self.spec, self.index)
            except Exception as exc:
                failed = setup_failure(exc)
                raise TaskSetupError(failed.message, failed.bad_input) from exc

    def call(self, job: Any, timeout: float) -> Any:
        self.start()
        return RUN[type(job)](self.state, job)

    def close(self) -> None:
        self.state = None


def _die_with_parent(parent: int) -> None:
    """End this process when its parent ends, even in the middle of a job."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def serve_forks(sock_fd: int, relay: int) -> None:
    """The sandbox starter of process `relay` (gp_losses.sandbox.Starter): with this module
    imported — torch and the engine, and torch._dynamo, which an optimizer's first step imports
    — fork one sandbox per request on the socket `sock_fd`, and report each one's end.

    A request is the working directory and environment (JSON), with four descriptors: the
    sandbox's two pipe ends, its stdout and its stderr. The answers are `STARTED` (pid; 0 if
    the fork failed) for each request, in order, and `ENDED` (pid, exit code as subprocess
    gives it) for each sandbox that ended. This process forks from its one Python thread and
    does no torch work before forking. It ends with `relay`: at once, killing its sandboxes,
    when `relay` is gone; once its sandboxes have ended, when `relay` closed the socket."""
    import torch._dynamo  # noqa: F401  (what warm_up would import in every sandbox)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the relay's to handle
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through wake_w
    children: set = set()
    closing = False

    def tell(kind: bytes, pid: int, code: int = 0) -> None:
        try:
            sock.send(struct.pack(FORK_ANSWER, kind, pid, code))
        except OSError:  # the relay has gone: nothing to tell
            pass

    while True:
        if os.getppid() != relay:  # the relay died: its sandboxes go with it
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            os._exit(0)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            tell(ENDED, pid, os.waitstatus_to_exitcode(status))
        if closing and not children:
            os._exit(0)
        ready = select.select([wake_r] if closing else [sock, wake_r], [], [], 0.5)[0]
        if wake_r in ready:
            with contextlib.suppress(OSError):
                while os.read(wake_r, 64):
                    pass
        if sock not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, REQUEST_BYTES, 4)
        except OSError:
            data, fds = b"", []
        if not data:  # the relay closed the socket: end once the sandboxes have
            closing = True
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        starter = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no memory or process left: say so, and serve on
            pid = -1
        if pid == 0:
            _forked(sock, (wake_r, wake_w), fds, json.loads(data), starter)
        for fd in fds:
            os.close(fd)
        if pid > 0:
            children.add(pid)
        tell(STARTED, max(pid, 0))


REQUEST_BYTES = 1 << 20
"""The largest request a starter reads (the environment is most of it)."""


def _forked(sock: socket.socket, wake: Tuple[int, int], fds: List[int], request: Dict[str, Any],
            starter: int) -> None:
    """A sandbox, just forked from its starter: as if started afresh, then main(); never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        read_fd, write_fd, out_fd, err_fd = fds
        null = os.open(os.devnull, os.O_RDONLY)
        for source, target in ((null, 0), (out_fd, 1), (err_fd, 2)):
            os.dup2(source, target)
        for fd in {null, out_fd, err_fd} - {0, 1, 2}:
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        main(read_fd, write_fd, starter)  # dies with the starter, even one that died already
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(read_fd: int, write_fd: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    init: Init = inbox.recv()
    sys.path[:] = init.path
    try:
        state = SandboxState(init.spec, init.index)
    except BaseException as exc:  # the task cannot be set up: say why, and stop
        outbox.send(setup_failure(exc))
        return
    outbox.send(Ready(state.device))
    while True:
        try:
            job = inbox.recv()
        except EOFError:  # the parent closed the pipe: the run is over; skip the slow teardown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        outbox.send(RUN[type(job)](state, job))
