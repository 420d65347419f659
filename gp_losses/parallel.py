"""Work shipped to SCOOP workers (or run in-process without SCOOP), and worker-local state.

Jobs are plain data — config dicts, tree strings, seeds — and each worker builds its task,
search space and rejection protocol once, lazily, from the config it receives. Without
`python -m scoop` the same functions run through the builtin map, silently.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from gp_losses import config as cfg
from gp_losses.context import Context, build_context
from gp_losses.evaluate import CandidateTimeout, proxy_evaluate, time_limit
from gp_losses.rejection import Protocol, ProtocolResult
from gp_losses.trees import parse_tree


def scoop_running() -> bool:
    try:
        import scoop
    except ImportError:  # pragma: no cover - scoop is a dependency
        return False
    return bool(scoop.IS_RUNNING)


def worker_count() -> int:
    """Workers available: SCOOP's pool size under `-m scoop`, else 1."""
    if scoop_running():
        import scoop

        return max(1, int(getattr(scoop, "SIZE", 1) or 1))
    return 1


def _run_group(job: Tuple[Callable[[Any], Any], List[Any]]) -> List[Any]:
    fn, group = job
    return [fn(item) for item in group]


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
    """`[fn(x) for x in items]`, spread over SCOOP workers when running under SCOOP.

    The items go out as one future per worker (items i, i+W, i+2W, ... in future i). Left to
    itself, SCOOP 0.7's origin asks the broker for work whenever its own queue runs dry and
    then runs most futures itself (10 of 12 jobs in six two-job maps, measured). Here the
    origin keeps one future and never asks for more, so each worker gets one share.
    """
    items = list(items)
    if not items:
        return []
    if not scoop_running():
        return [fn(item) for item in items]
    import scoop
    from scoop import _control, futures

    queue = getattr(_control, "execQueue", None)
    if scoop.IS_ORIGIN and hasattr(queue, "lowwatermark"):  # SCOOP 0.7 internals; else as is
        queue.lowwatermark = 0.0
    width = min(worker_count(), len(items))
    groups = [items[i::width] for i in range(width)]
    results: List[Any] = [None] * len(items)
    for i, values in enumerate(futures.map(_run_group, [(fn, g) for g in groups])):
        results[i::width] = values
    return results


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def device_for(kind: str, local_index: int, gpu_count: int) -> str:
    """`auto` is CUDA when a GPU is present; with G GPUs a worker takes GPU local_index mod G."""
    if kind == "cpu" or (kind == "auto" and gpu_count == 0):
        return "cpu"
    if gpu_count == 0:
        raise RuntimeError("proxy.device is 'cuda' but no CUDA device is available")
    return f"cuda:{local_index % gpu_count}"


def local_index(run_id: str, limit: int = 4096) -> int:
    """This process's index among the workers of `run_id` on this host (0, 1, ...), claimed
    with an exclusive file so that workers on one node spread over its GPUs."""
    base = os.path.join(tempfile.gettempdir(), f"gp_losses-{run_id}")
    for k in range(limit):
        try:
            fd = os.open(f"{base}-slot{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return k
    return os.getpid() % limit


class WorkerState:
    """What one worker process holds for one run: context, task on its device, protocol."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        config = cfg.build(cfg.RunConfig, spec["config"])
        torch.set_num_threads(config.proxy.threads)
        self.context: Context = build_context(config)
        gpus = torch.cuda.device_count() if config.proxy.device != "cpu" else 0
        index = local_index(spec.get("run_id", "local")) if gpus > 1 else 0
        self.device = device_for(config.proxy.device, index, gpus)
        self.task = self.context.make_task(self.device)
        self._protocol: Optional[Protocol] = None

    @property
    def protocol(self) -> Protocol:
        if self._protocol is None:
            space = self.context.space
            self._protocol = Protocol(self.task, space.branches, space.operators,
                                      self.context.config.protocol)
        return self._protocol


_STATES: Dict[str, WorkerState] = {}


def worker_state(spec: Dict[str, Any]) -> WorkerState:
    key = json.dumps(spec, sort_keys=True)
    if key not in _STATES:
        _STATES[key] = WorkerState(spec)
    return _STATES[key]


def protocol_job(job: Tuple[Dict[str, Any], int, str, bool]) -> Dict[str, Any]:
    """Rejection protocol for one branch tree: ProtocolResult as a dict, never raising."""
    spec, branch, expr, optimize = job
    state = worker_state(spec)
    space = state.context.space
    error = None
    try:
        tree = parse_tree(expr, space.psets[branch])
        with time_limit(state.context.config.protocol.timeout_s):
            result = state.protocol.check(branch, tree, optimize)
    except CandidateTimeout:
        result = ProtocolResult(False, "timeout")
    except Exception as exc:  # a failing candidate is a result
        result, error = ProtocolResult(False, "error"), f"{type(exc).__name__}: {exc}"
    return {**result.to_dict(), "error": error}


def train_job(job: Tuple[Dict[str, Any], Dict[str, str], int]) -> Dict[str, Any]:
    """Proxy evaluation of one loss ({branch: expr}) with `seed`; a result dict, never raising."""
    spec, exprs, seed = job
    state = worker_state(spec)
    config = state.context.config
    try:
        loss = state.context.space.compile(state.context.space.parse(exprs))
    except Exception as exc:
        out = {"status": "error", "score": 0.0, "metrics": {}, "iterations": 0, "seconds": 0.0,
               "error": f"{type(exc).__name__}: {exc}"}
    else:
        out = proxy_evaluate(state.task, loss, seed, config.proxy.timeout_s,
                             config.search.stop_invalid)
    out["worker"] = worker_id()
    out["device"] = state.device
    return out
