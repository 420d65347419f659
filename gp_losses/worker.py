"""The process that runs a search's jobs: it holds the task and dies alone.

A `gp_losses.sandbox.Sandbox` starts this module in a child process, once per worker (serial
runs included), and sends it plain data: first the run's spec, then one job at a time. The
task is built and set up here, once, before any job and outside every job's time limit; if
that fails, the child says why and exits, and the run stops. A job that crashes the process
(a segfault, os._exit, an out-of-memory kill) costs only that job: the sandbox notices the
closed pipe and starts a fresh child.

    parent -> child   ("init", {"spec", "index", "path"})
                      then ("candidates" | "describe" | "protocol" | "train", job)
    child -> parent   ("ready", device) | ("failed", (message, bad_input))  then ("done", result)
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from gp_losses import config as cfg
from gp_losses.context import build_context
from gp_losses.core.errors import InputError, TaskSetupError, describe
from gp_losses.evaluate import CandidateTimeout, call_with_time_limit, proxy_evaluate
from gp_losses.outcomes import ProtocolResult, cacheable, training_failure
from gp_losses.rejection import Protocol, static_reason
from gp_losses.trees import LossTree, parse_tree
from gp_losses.variation import candidate, candidate_rng

PROTOCOL_CACHE_SIZE = 50_000
"""Protocol results a worker remembers (deterministic outcomes only), least recently used out."""


def device_for(kind: str, local_index: int, gpu_count: int) -> str:
    """`auto` is CUDA when a GPU is present; with G GPUs a worker takes GPU local_index mod G."""
    if kind == "cpu" or (kind == "auto" and gpu_count == 0):
        return "cpu"
    if gpu_count == 0:
        raise InputError("proxy.device is 'cuda' but no CUDA device is available; use auto or cpu")
    return f"cuda:{local_index % gpu_count}"


class WorkerState:
    """What the child holds for one run: context, the task on its device (set up), protocol."""

    def __init__(self, spec: Dict[str, Any], index: int) -> None:
        config = cfg.build(cfg.RunConfig, spec["config"])
        torch.set_num_threads(config.proxy.threads)
        self.context = build_context(config)
        gpus = torch.cuda.device_count() if config.proxy.device != "cpu" else 0
        self.device = device_for(config.proxy.device, index, gpus)
        self.task = self.context.make_task(self.device, spec.get("split", "val"))
        self.task.ensure_setup()
        self.protocol: Optional[Protocol] = None
        if config.search.rejection or config.search.equivalence:
            space = self.context.space
            self.protocol = Protocol(self.task, space.branches, space.operators, config.protocol)
        self.cache: "collections.OrderedDict[Tuple[int, str], Dict[str, Any]]" = collections.OrderedDict()
        """(branch, expr) -> protocol result, for the deterministic outcomes met here."""

    def learn(self, known: List[Tuple[int, str, Dict[str, Any]]]) -> None:
        """Take protocol results that other workers found ((branch, expr, result)) into the
        cache; only deterministic outcomes are cached."""
        for branch, expr, result in known:
            if cacheable(result):
                self.cache[(branch, expr)] = {k: v for k, v in result.items() if k != "seconds"}
        while len(self.cache) > PROTOCOL_CACHE_SIZE:
            self.cache.popitem(last=False)

    def check(self, branch: int, tree: LossTree, expr: Optional[str] = None) -> Dict[str, Any]:
        """The search's decision on one candidate: static checks, this worker's cache, then the
        protocol (with `search.rejection` off: passed, with the fingerprint when
        `search.equivalence` wants it). ProtocolResult.to_dict(), never raising."""
        search = self.context.config.search
        if search.rejection:
            reason = static_reason(tree, self.context.space.branches[branch])
            if reason:
                return ProtocolResult(False, reason).to_dict()
            key = (branch, expr or str(tree))
            cached = self.cache.get(key)
            if cached is not None:
                self.cache.move_to_end(key)
                return dict(cached, seconds=0.0, cached=True)
        elif not search.equivalence:
            return ProtocolResult(True).to_dict()
        result = protocol_result(self, branch, tree, search.rejection)
        if not search.rejection:  # only the fingerprint was wanted: the first candidate is taken
            return dict(result, passed=True)
        if cacheable(result):
            self.cache[key] = {k: v for k, v in result.items() if k != "seconds"}
            while len(self.cache) > PROTOCOL_CACHE_SIZE:
                self.cache.popitem(last=False)
        return result


def protocol_result(state: WorkerState, branch: int, tree: LossTree, optimize: bool) -> Dict[str, Any]:
    """The rejection protocol on one branch tree: ProtocolResult.to_dict(), never raising."""
    start, error = time.perf_counter(), None
    try:
        result = call_with_time_limit(lambda: state.protocol.check(branch, tree, optimize),
                                      state.context.config.protocol.timeout_s)
    except CandidateTimeout as exc:
        result, error = ProtocolResult(False, "timeout"), str(exc)
    except Exception as exc:  # a failing candidate is a result
        result, error = ProtocolResult(False, "error"), describe(exc)
    if error:
        result.seconds = time.perf_counter() - start
    return result.to_dict(error)


def run_protocol(state: WorkerState, job: Tuple[int, str, bool]) -> Dict[str, Any]:
    """The protocol on one branch tree given as a string (a fingerprint for `retrain`)."""
    branch, expr, optimize = job
    try:
        tree = parse_tree(expr, state.context.space.psets[branch])
    except Exception as exc:
        return ProtocolResult(False, "error").to_dict(describe(exc))
    return protocol_result(state, branch, tree, optimize)


Item = Tuple[int, int, Optional[str], int, int, bool]
"""A range of one candidate stream: (slot number, branch, parent's branch tree or None, first
index, end index, whether the range ends at its first pass)."""


def _maker(state: WorkerState, item: Item) -> Callable[[int], Tuple[LossTree, Dict[str, Any]]]:
    """index -> (candidate tree, how it was made) for the item's stream."""
    slot, branch, parent = item[:3]
    space, seed = state.context.space, state.context.config.seed
    pset = space.psets[branch]
    tree = parse_tree(parent, pset) if parent is not None else None
    return lambda index: candidate(pset, tree, candidate_rng(seed, slot, branch, index),
                                   space.depth, space.height_limit)


def run_candidates(state: WorkerState, job: Tuple[Any, ...]) -> List[Dict[str, Any]]:
    """Candidates of the items' ranges, in order, each range until its first pass (when the
    item says so), for about `seconds` (the candidate under way when time is up is finished;
    at least one is checked). job = (items, seconds[, known]): `known` are protocol results
    that other workers found, taken into this worker's cache first.

    Per item: {"end": first index not checked, "results": [(index, expr, origin, result)] for
    every index checked, "seconds"}. The caller hands the unchecked rest of a range out again.
    """
    items, seconds = job[:2]
    state.learn(job[2] if len(job) > 2 else [])
    start = time.perf_counter()
    out: List[Dict[str, Any]] = []
    passed = set()

    for item in items:
        first, end = item[3], item[4]
        results: List[Any] = []
        index = first
        if item[:2] in passed:  # a later range of a stream whose pass this job found
            out.append({"end": index, "results": results, "seconds": 0.0})
            continue
        began = time.perf_counter()
        make = _maker(state, item)
        while index < end and (time.perf_counter() - start < seconds or not (out or results)):
            tree, origin = make(index)
            expr = str(tree)
            result = state.check(item[1], tree, expr)
            results.append((index, expr, origin, result))
            index += 1
            if result["passed"] and item[5]:
                passed.add(item[:2])
                break
        out.append({"end": index, "results": results, "seconds": time.perf_counter() - began})
    return out


def run_describe(state: WorkerState, job: Tuple[Item, int]) -> Tuple[str, Dict[str, Any]]:
    """Candidate `index` of the item's stream, made but not checked: (expr, origin)."""
    item, index = job
    tree, origin = _maker(state, item)(index)
    return str(tree), origin


def run_training(state: WorkerState, job: Tuple[Dict[str, str], int]) -> Dict[str, Any]:
    """Proxy evaluation of one loss ({branch: expr}) with a seed; a result dict, never raising."""
    exprs, seed = job
    config = state.context.config
    try:
        loss = state.context.space.compile(state.context.space.parse(exprs))
    except Exception as exc:
        out = training_failure("error", describe(exc))
    else:
        out = proxy_evaluate(state.task, loss, seed, config.proxy.timeout_s, config.search.stop_invalid)
    out["device"] = state.device
    return out


def setup_failure(exc: BaseException) -> Tuple[str, bool]:
    """TaskSetupError's arguments for an exception raised while setting the task up."""
    bad_input = isinstance(exc, InputError)
    return f"task setup failed: {exc if bad_input else describe(exc)}", bad_input


JOBS: Dict[str, Callable[[WorkerState, Any], Any]] = {
    "candidates": run_candidates, "describe": run_describe, "protocol": run_protocol,
    "train": run_training}


class InProcess:
    """Runs jobs in this process (`proxy.isolate: false`), with the Sandbox's interface."""

    def __init__(self, spec: Dict[str, Any], index: int = 0) -> None:
        self.spec, self.index = spec, index
        self.state: Optional[WorkerState] = None

    def start(self) -> None:
        if self.state is None:
            try:
                self.state = WorkerState(self.spec, self.index)
            except Exception as exc:
                raise TaskSetupError(*setup_failure(exc)) from exc

    def call(self, kind: str, job: Any, timeout: float) -> Dict[str, Any]:
        self.start()
        return JOBS[kind](self.state, job)

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


def main(read_fd: int, write_fd: int, parent: int) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    _, init = inbox.recv()
    sys.path[:] = init["path"]
    try:
        state = WorkerState(init["spec"], init["index"])
    except BaseException as exc:  # the task cannot be set up: say why, and stop
        outbox.send(("failed", setup_failure(exc)))
        return
    outbox.send(("ready", state.device))
    while True:
        try:
            kind, job = inbox.recv()
        except EOFError:  # the parent closed the pipe: the run is over; skip the slow teardown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        outbox.send(("done", JOBS[kind](state, job)))
