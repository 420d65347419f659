"""Work shipped to SCOOP workers (or run in this process without SCOOP).

Jobs are plain data — config dicts, tree strings, seeds. Each process that runs jobs hands
them to its own sandbox, a child process that builds and sets up the task once
(gp_losses/sandbox.py, gp_losses/worker.py), so that a job which kills its process costs only
that job. Without `python -m scoop` the same functions run through the builtin map, silently.
No torch here: SCOOP workers only relay jobs and stay small.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from gp_losses.outcomes import ProtocolResult, training_failure
from gp_losses.sandbox import JobTimeout, ProcessDied, hard_limit, sandbox


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


def route_scoop_log(path: str) -> None:
    """Send SCOOP's own log (this process's) to the file `path`; the terminal gets one short
    line per warning instead of the whole job's payload, printed twice."""
    if not scoop_running():
        return
    scoop_log = logging.getLogger("SCOOPLogger")
    for handler in list(scoop_log.handlers):  # SCOOP's console handler, or an earlier run's
        if isinstance(handler, (logging.FileHandler, _ShortLine)) or type(handler) is logging.StreamHandler:
            scoop_log.removeHandler(handler)
            handler.close()
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("[%(asctime)s] %(module)s %(levelname)s %(message)s"))
    scoop_log.addHandler(to_file)
    scoop_log.addHandler(_ShortLine(path))
    scoop_log.propagate = False


class _ShortLine(logging.Handler):
    """One line on stderr for a SCOOP warning or error: its start, and where the rest is."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record) -> None:
        lines = record.getMessage().splitlines()
        text = lines[0] if lines else ""
        text = text if len(text) <= 80 else text[:80] + "…"
        print(f"SCOOP {record.levelname.lower()}: {text} (all of it in {self.path})", file=sys.stderr)


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any],
                 item_limit_s: Optional[float] = None) -> List[Any]:
    """`[fn(x) for x in items]`, spread over SCOOP workers when running under SCOOP.

    The items go out as one future per worker (items i, i+W, i+2W, ... in future i). Left to
    itself, SCOOP 0.7's origin asks the broker for work whenever its own queue runs dry and
    then runs most futures itself (10 of 12 jobs in six two-job maps, measured). Here the
    origin keeps one future and never asks for more, so each worker gets one share.

    `item_limit_s`: the longest one item may take (its job's hard limit). A future whose
    worker has not answered within its items' limits is sent again (its worker is taken to be
    lost, see `_resend_overdue`); None: it is waited for, however long.
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
        _resend_overdue(queue)
    width = min(worker_count(), len(items))
    groups = [items[i::width] for i in range(width)]
    sent = [futures.submit(_run_group, (fn, group)) for group in groups]
    if item_limit_s is not None:
        now = time.monotonic()
        for future, group in zip(sent, groups):
            span = len(group) * item_limit_s + RESEND_SLACK_S
            _DEADLINES[future.id] = (now + span, span)
    results: List[Any] = [None] * len(items)
    try:
        for i, future in enumerate(sent):
            results[i::width] = future.result()
    finally:
        for future in sent:
            _DEADLINES.pop(future.id, None)
    return results


RESEND_SLACK_S = 30.0
"""Added to a future's items' limits before it counts as lost (transfer, a busy origin)."""
_DEADLINES: Dict[Any, Tuple[float, float]] = {}
"""Future id -> (when it counts as lost, the span that deadline was set from)."""


def _resend_overdue(queue: Any) -> None:
    """Replace SCOOP 0.7's origin-side search for lost futures: send again only a future
    that is past its deadline (set by parallel_map from its jobs' hard limits).

    SCOOP's own version asks the broker, every 2 s while the origin waits, about every
    future it sent away, and sends again any the broker says nobody holds. In SCOOP 0.7 that
    answer is "nobody" for every future a worker holds: the broker drops a worker's futures
    until its first status report (25 s after it starts) and then compares the ids it was
    sent (pickled bytes) with the ids the report lists (tuples), which never match. So a job
    that outlasts the origin's own share ran twice ("Lost track of future ... Resending it":
    a 60-s job beside a 1-s one ran on both processes and the map took 65 s; a pose
    retraining with 2-min jobs resent 10 of 12). A job cannot outlast its hard limit, so a
    future still out after its items' limits has lost its worker: that one is sent again.
    """
    if getattr(queue, "_gp_losses_resend", False) or not hasattr(queue, "askForPreviousFutures"):
        return

    queue.askForPreviousFutures = lambda: _resend_due(queue)
    queue._gp_losses_resend = True


class Lanes:
    """W lanes that each run one job at a time, with no barrier between jobs: the search hands
    a lane its next job as soon as it is free (gp_losses/evolution.py), so that rejection
    work, trainings and the next batch's random candidates keep every worker busy.

    Without SCOOP (or with one worker) there is one lane, and a job runs in this process's
    sandbox when it is started. Under SCOOP with W workers, lane 0 is the origin's own
    sandbox, driven from a thread, and lanes 1 .. W-1 are futures sent to the broker, never
    more than W-1 at a time (one per other worker); `wait()` sleeps until either answers.
    Remote futures past their deadline (`limit_s` plus RESEND_SLACK_S) are sent again, as in
    `parallel_map`.
    """

    def __init__(self, width: Optional[int] = None) -> None:
        self.width = width or worker_count()
        self.remote = self.width > 1 and scoop_running() and _scoop_internals()
        if self.width > 1 and not self.remote:
            logging.getLogger("gp_losses").warning(
                "this SCOOP version lacks the internals the search's lanes drive (SCOOP 0.7's "
                "origin queue): jobs run on the origin alone")
            self.width = 1
        self.free: List[int] = list(range(self.width))
        """Lanes without a job, lowest first."""
        self._flight: Dict[Any, Tuple[int, Any, float]] = {}
        """Running job -> (lane, tag, when it started)."""
        self._done: List[Tuple[Any, Any, Any]] = []
        """Finished jobs not yet handed back: (key, result, exception)."""
        self._remote: List[Any] = []
        """The SCOOP futures among the running jobs."""
        self.blocked = 0.0
        """Seconds this process spent waiting on jobs (running the only lane's, or in wait())."""
        self._lock = threading.Lock()
        self._wake_r = self._wake_w = None
        if self.remote:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)

    @property
    def busy(self) -> int:
        return len(self._flight)

    def start(self, lane: int, fn: Callable[[Any], Any], arg: Any, tag: Any, limit_s: float) -> None:
        """Run `fn(arg)` on the free `lane`; `wait()` hands back (lane, tag, result, seconds)."""
        self.free.remove(lane)
        began = time.perf_counter()
        if not self.remote:  # the only lane: run it now
            key = object()
            self._flight[key] = (lane, tag, began)
            try:
                self._done.append((key, fn(arg), None))
            except Exception as exc:  # handed back by wait(), as from the other lanes
                self._done.append((key, None, exc))
            finally:
                self.blocked += time.perf_counter() - began
            return
        if lane == 0:
            key = object()
            self._flight[key] = (lane, tag, began)
            threading.Thread(target=self._run_here, args=(key, fn, arg), daemon=True,
                             name="gp_losses-lane-0").start()
            return
        from scoop import _control, futures

        future = futures.submit(fn, arg)
        queue = _control.execQueue
        with contextlib.suppress(ValueError):
            queue.movable.remove(future)  # SCOOP would keep a lone future here: send it away
        queue.socket.sendFuture(future)
        _DEADLINES[future.id] = (time.monotonic() + limit_s + RESEND_SLACK_S, limit_s + RESEND_SLACK_S)
        self._flight[future] = (lane, tag, began)
        self._remote.append(future)

    def _run_here(self, key: Any, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            outcome = (key, fn(arg), None)
        except BaseException as exc:  # handed to the main thread by wait()
            outcome = (key, None, exc)
        with self._lock:  # close() takes the lock too: never a write to a closed descriptor
            if self._wake_w is None:  # closed: the run is over
                return
            self._done.append(outcome)
            os.write(self._wake_w, b"x")

    def wait(self) -> List[Tuple[int, Any, Any, float]]:
        """Block until at least one job has finished; (lane, tag, result, seconds) of every
        finished one, its lane free again. An exception a job raised is raised here."""
        if not self._flight:
            raise RuntimeError("Lanes.wait() with no job running")
        poller, began = None, time.perf_counter()
        try:
            while True:
                finished = self._collect()
                if finished:
                    return finished
                if poller is None:
                    poller = self._poller()
                poller.poll(1000)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
        finally:
            self.blocked += time.perf_counter() - began

    def _poller(self) -> Any:
        """A poller on SCOOP's sockets and on this object's wake-up pipe (lane 0's thread)."""
        import zmq
        from scoop import _control

        comm = _control.execQueue.socket
        poller = zmq.Poller()
        for sock in (comm.socket, comm.direct_socket, comm.infoSocket):
            poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        return poller

    def _collect(self) -> List[Tuple[int, Any, Any, float]]:
        if self.remote:
            from scoop import _control

            queue = _control.execQueue
            queue.updateQueue()
            for future in [f for f in self._remote if f.isDone]:
                self._remote.remove(future)
                _DEADLINES.pop(future.id, None)
                outcome = (future, future.resultValue, future.exceptionValue)
                future._delete()
                self._done.append(outcome)
            _resend_due(queue)
        with self._lock:
            done, self._done = self._done, []
        out, error = [], None
        now = time.perf_counter()
        for key, result, exc in done:
            lane, tag, began = self._flight.pop(key)
            self.free.append(lane)
            if exc is not None:
                error = error or exc
            else:
                out.append((lane, tag, result, now - began))
        self.free.sort()
        if error is not None:
            raise error
        return out

    def drain(self) -> List[Tuple[int, Any, Any, float]]:
        """Wait for every running job; what they returned."""
        out = []
        while self._flight:
            out += self.wait()
        return out

    def close(self) -> None:
        """Forget the running jobs (a failed run: their answers are not waited for)."""
        for future in self._remote:
            _DEADLINES.pop(future.id, None)
        self._flight.clear()
        self._remote.clear()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None


def _scoop_internals() -> bool:
    """Whether this SCOOP has the internals Lanes drives (SCOOP 0.7's origin queue)."""
    try:
        from scoop import _control

        queue = _control.execQueue
        comm = queue.socket
        return all(hasattr(queue, a) for a in ("movable", "updateQueue")) and all(
            hasattr(comm, a) for a in ("socket", "direct_socket", "infoSocket", "sendFuture"))
    except Exception:
        return False


def _resend_due(queue: Any) -> None:
    """Send again every future of ours that is past its deadline (see `_resend_overdue`)."""
    from scoop import _control

    now = time.monotonic()
    for key, (deadline, span) in list(_DEADLINES.items()):
        future = _control.futureDict.get(key)
        if future is None or future.isDone:
            continue
        if now >= deadline:
            logging.getLogger("SCOOPLogger").warning(
                "no answer from the worker running %s within its jobs' time limits: "
                "sending it again", key)
            _DEADLINES[key] = (now + span, span)
            queue.socket.sendFuture(future)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_CLAIMED: List[str] = []


def local_index(run_id: str, limit: int = 4096) -> int:
    """This process's index among the workers of `run_id` on this host (0, 1, ...), claimed
    with an exclusive file (removed when the process exits) so that workers on one node
    spread over its GPUs."""
    base = os.path.join(tempfile.gettempdir(), f"gp_losses-{run_id}")
    for k in range(limit):
        try:
            fd = os.open(f"{base}-slot{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        _CLAIMED.append(f"{base}-slot{k}")
        return k
    return os.getpid() % limit


@atexit.register
def _release_slots() -> None:
    for path in _CLAIMED:
        with contextlib.suppress(OSError):
            os.remove(path)


_INDEX: Dict[str, int] = {}


def _sandbox(spec: Dict[str, Any]):
    """This process's sandbox for the run; its GPU slot (`local_index`) is claimed once."""
    run_id = spec.get("run_id", "local")
    if spec["config"]["proxy"]["device"] != "cpu" and run_id not in _INDEX:
        _INDEX[run_id] = local_index(run_id)
    return sandbox(spec, _INDEX.get(run_id, 0))


def start_job(spec: Dict[str, Any]) -> str:
    """Start this worker's sandbox (the task's setup runs there now, not inside a job);
    TaskSetupError if it fails. Returns the worker's id."""
    _sandbox(spec).start()
    return worker_id()


def start_workers(spec: Dict[str, Any]) -> List[str]:
    """Set the task up in every worker before the first job, so that a task that cannot be
    set up stops the run at once; the ids of the workers that answered."""
    return parallel_map(start_job, [spec] * worker_count())


def protocol_job(job: Tuple[Dict[str, Any], int, str, bool]) -> Dict[str, Any]:
    """The rejection protocol for one branch tree: ProtocolResult.to_dict(), never raising
    for the candidate's sake (TaskSetupError stops the run)."""
    spec, branch, expr, optimize = job
    start = time.perf_counter()
    try:
        return _sandbox(spec).call("protocol", (branch, expr, optimize),
                                   hard_limit(spec["config"]["protocol"]["timeout_s"]))
    except JobTimeout as exc:
        reason, error = "timeout", str(exc)
    except ProcessDied as exc:
        reason, error = "error", str(exc)
    return ProtocolResult(False, reason, seconds=time.perf_counter() - start).to_dict(error)


def candidates_job(job: Tuple[Any, ...]) -> List[Dict[str, Any]]:
    """Check candidates of several streams' ranges for about `seconds` (worker.run_candidates);
    `job` = (spec, items, seconds[, known]), where `known` holds protocol results found by
    other workers, for this worker's cache.

    If the job kills its process or hangs, it is taken apart: each candidate is checked in a
    job of its own, and the one that cannot be is reported as an error (made again, unchecked,
    to name it). Never raises for a candidate's sake."""
    spec, items, seconds = job[:3]
    known = job[3] if len(job) > 3 else []
    limit = hard_limit(seconds + spec["config"]["protocol"]["timeout_s"])
    try:
        return _sandbox(spec).call("candidates", (items, seconds, known), limit)
    except (JobTimeout, ProcessDied):
        pass
    start, out = time.perf_counter(), []
    for item in items:
        results, index, began = [], item[3], time.perf_counter()
        while index < item[4] and (time.perf_counter() - start < seconds or not (out or results)):
            one = (*item[:3], index, index + 1, item[5])
            try:
                (part,) = _sandbox(spec).call("candidates", ([one], 0.0), limit)
                result = part["results"][0]
            except (JobTimeout, ProcessDied) as exc:
                expr, origin = _sandbox(spec).call("describe", (one, index), limit)
                reason = "timeout" if isinstance(exc, JobTimeout) else "error"
                result = (index, expr, origin, ProtocolResult(False, reason).to_dict(str(exc)))
            results.append(result)
            index += 1
            if result[3]["passed"] and item[5]:
                break
        out.append({"end": index, "results": results, "seconds": time.perf_counter() - began})
    return out


def train_job(job: Tuple[Dict[str, Any], Dict[str, str], int]) -> Dict[str, Any]:
    """Proxy evaluation of one loss ({branch: expr}) with `seed`: a result dict, never raising
    for the candidate's sake (TaskSetupError stops the run)."""
    spec, exprs, seed = job
    start = time.perf_counter()
    try:
        out = _sandbox(spec).call("train", (exprs, seed), hard_limit(spec["config"]["proxy"]["timeout_s"]))
    except JobTimeout as exc:
        out = training_failure("timeout", str(exc), time.perf_counter() - start)
    except ProcessDied as exc:
        out = training_failure("error", str(exc), time.perf_counter() - start)
    out["worker"] = worker_id()
    return out
