"""Where jobs run: the workers of a search, each running one job at a time, and a plain map.

Without SCOOP (or with one worker) there is one worker, the origin, and a job runs when it is
given. Under `python -m scoop` with W workers, worker 0 is the origin itself, its jobs run in
a thread, and workers 1 .. W-1 are SCOOP's other processes, each given one future at a time.
Each worker hands its jobs to its own sandbox (gp_losses/jobs.py). No torch here: the origin
only relays jobs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from gp_losses import cluster


@dataclass(frozen=True)
class Done:
    """A finished job: the worker that ran it, the caller's tag, its value, its seconds."""

    worker: int
    tag: Any
    value: Any
    seconds: float


class Workers:
    """W workers that each run one job at a time, with no barrier between jobs: the search
    gives a worker its next job as soon as it is free (gp_losses/scheduler.py), so that
    rejection work, trainings and the next batch's random candidates keep every worker busy.
    A remote future past its deadline (`limit_s` plus cluster.RESEND_SLACK_S) is sent again.
    """

    def __init__(self, width: Optional[int] = None) -> None:
        self.width = width or cluster.size()
        self.remote = self.width > 1 and cluster.running() and cluster.check()
        if not self.remote:
            self.width = 1
        else:
            cluster.keep_origin_share()
        self.free: List[int] = list(range(self.width))
        """Workers without a job, lowest first."""
        self._flight: Dict[Any, Tuple[int, Any, float]] = {}
        """Running job -> (worker, tag, when it started)."""
        self._done: List[Tuple[Any, Any, Optional[BaseException]]] = []
        """Finished jobs not yet handed back: (key, value, exception)."""
        self._remote: List[Any] = []
        """The SCOOP futures among the running jobs."""
        self.blocked = 0.0
        """Seconds this process spent waiting on jobs (running the only worker's, or in wait())."""
        self._lock = threading.Lock()
        self._wake_r = self._wake_w = None
        self._here: "queue.SimpleQueue" = queue.SimpleQueue()
        """Worker 0's jobs, run by one thread of the origin for the whole search."""
        if self.remote:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            threading.Thread(target=self._run_here, daemon=True, name="gp_losses-worker-0").start()

    @property
    def busy(self) -> int:
        return len(self._flight)

    def start(self, worker: int, fn: Callable[[Any], Any], job: Any, tag: Any, limit_s: float) -> None:
        """Run `fn(job)` on the free `worker`; `wait()` hands back its Done."""
        self.free.remove(worker)
        began = time.perf_counter()
        if not self.remote:  # the only worker: run it now
            key = object()
            self._flight[key] = (worker, tag, began)
            try:
                self._done.append((key, fn(job), None))
            except Exception as exc:  # handed back by wait(), as from the other workers
                self._done.append((key, None, exc))
            finally:
                self.blocked += time.perf_counter() - began
            return
        if worker == 0:
            key = object()
            self._flight[key] = (worker, tag, began)
            self._here.put((key, fn, job))
            return
        future = cluster.submit(fn, job, limit_s)
        cluster.send_away(future)
        self._flight[future] = (worker, tag, began)
        self._remote.append(future)

    def _run_here(self) -> None:
        """Worker 0: the origin's own jobs, one at a time, until close()."""
        while True:
            item = self._here.get()
            if item is None:
                return
            key, fn, job = item
            try:
                outcome = (key, fn(job), None)
            except BaseException as exc:  # handed to the main thread by wait()
                outcome = (key, None, exc)
            with self._lock:  # close() takes the lock too: never a write to a closed descriptor
                if self._wake_w is None:  # closed: the run is over
                    return
                self._done.append(outcome)
                os.write(self._wake_w, b"x")

    def wait(self) -> List[Done]:
        """Block until at least one job has finished; the Done of every finished one, its
        worker free again. An exception a job raised is raised here."""
        if not self._flight:
            raise RuntimeError("Workers.wait() with no job running")
        polling, began = None, time.perf_counter()
        try:
            while True:
                finished = self._collect()
                if finished:
                    return finished
                if polling is None:
                    polling = cluster.poller(self._wake_r)
                polling.poll(1000)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
        finally:
            self.blocked += time.perf_counter() - began

    def _collect(self) -> List[Done]:
        if self.remote:
            cluster.update()
            for future in [f for f in self._remote if f.isDone]:
                self._remote.remove(future)
                self._done.append((future, *cluster.outcome(future)))
        with self._lock:
            done, self._done = self._done, []
        out, error = [], None
        now = time.perf_counter()
        for key, value, exc in done:
            worker, tag, began = self._flight.pop(key)
            self.free.append(worker)
            if exc is not None:
                error = error or exc
            else:
                out.append(Done(worker, tag, value, now - began))
        self.free.sort()
        if error is not None:
            raise error
        return out

    def drain(self) -> List[Done]:
        """Wait for every running job; what they returned."""
        out = []
        while self._flight:
            out += self.wait()
        return out

    def close(self) -> None:
        """Forget the running jobs (a failed run: their answers are not waited for)."""
        for future in self._remote:
            cluster.forget(future)
        self._flight.clear()
        self._remote.clear()
        self._here.put(None)
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any],
                 item_limit_s: Optional[float] = None) -> List[Any]:
    """`[fn(x) for x in items]`, spread over SCOOP's workers when running under SCOOP.

    The items go out as one future per worker (items i, i+W, i+2W, ... in future i); the
    origin keeps one future and never takes the others back (cluster.keep_origin_share), so
    each worker gets one share. `item_limit_s`: the longest one item may take (its job's hard
    limit); a future whose worker has not answered within its items' limits is sent again (its
    worker is taken to be lost); None: it is waited for, however long.
    """
    items = list(items)
    if not items:
        return []
    if not cluster.running():
        return [fn(item) for item in items]
    if cluster.is_origin() and cluster.check():
        cluster.keep_origin_share()
    width = min(cluster.size(), len(items))
    groups = [items[i::width] for i in range(width)]
    sent = [cluster.submit(_run_group, (fn, group),
                           None if item_limit_s is None else len(group) * item_limit_s)
            for group in groups]
    results: List[Any] = [None] * len(items)
    try:
        for i, future in enumerate(sent):
            results[i::width] = future.result()
    finally:
        for future in sent:
            cluster.forget(future)
    return results


def _run_group(job: Tuple[Callable[[Any], Any], List[Any]]) -> List[Any]:
    fn, group = job
    return [fn(item) for item in group]
