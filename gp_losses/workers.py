"""Where jobs run: the workers of a search, each running one job at a time, and a plain map.

Without SCOOP (or with one worker) there is one worker, the origin, and a job runs when it is
given. Under `python -m scoop` with W workers, worker 0 is the origin itself, its jobs run in
a thread, and workers 1 .. W-1 are SCOOP's other processes, each given one future at a time.
Each worker hands its jobs to its own sandbox (gp_losses/jobs.py). No torch here: the origin
only relays jobs.

A worker that has not answered a job within the job's hard limit (plus cluster.LOST_SLACK_S)
is gone: a job cannot outlast its limit in a live one. Its future is abandoned (a late answer
is dropped), the job runs again in the origin's lane, and its slot is never given work again;
with every other worker lost, the search goes on at the origin's pace. Jobs are deterministic,
so the records are those of a run that lost nothing. SCOOP 0.7 has no way to take a worker
back in: a node that comes back stays out of this run.
"""

from __future__ import annotations

import contextlib
import math
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
    A remote job past its hard limit (`limit_s` plus cluster.LOST_SLACK_S) has lost its
    worker: it runs again in the origin's lane, and that worker is not given work again.
    """

    def __init__(self, width: Optional[int] = None) -> None:
        self.width = width or cluster.live_workers()
        self.remote = self.width > 1 and cluster.running() and cluster.check()
        if not self.remote:
            self.width = 1
        else:
            cluster.keep_origin_share()
        self.free: List[int] = list(range(self.width))
        """Workers without a job, lowest first."""
        self.lost: List[int] = []
        """Workers taken as lost (a job of theirs never answered), in the order they were."""
        self._jobs: Dict[Any, Tuple[Callable[[Any], Any], Any, float]] = {}
        """Remote future -> (fn, job, when its worker counts as lost: time.monotonic())."""
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

    @property
    def live(self) -> List[int]:
        """The workers not lost."""
        return [w for w in range(self.width) if w not in self.lost]

    def start(self, worker: int, fn: Callable[[Any], Any], job: Any, tag: Any,
              limit_s: Optional[float]) -> None:
        """Run `fn(job)` on the free `worker`; `wait()` hands back its Done. `limit_s`: the
        job's hard limit (None: none; its worker is then never taken as lost)."""
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
        future = cluster.submit(fn, job)
        self._flight[future] = (worker, tag, began)
        self._remote.append(future)
        lost_at = math.inf if limit_s is None else time.monotonic() + limit_s + cluster.LOST_SLACK_S
        self._jobs[future] = (fn, job, lost_at)

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
            now = time.monotonic()
            for future in list(self._remote):
                if future.isDone:
                    self._remote.remove(future)
                    del self._jobs[future]
                    self._done.append((future, *cluster.outcome(future)))
                elif now >= self._jobs[future][2]:
                    self._lose(future)
        with self._lock:
            done, self._done = self._done, []
        out, error = [], None
        now = time.perf_counter()
        for key, value, exc in done:
            worker, tag, began = self._flight.pop(key)
            if worker not in self.lost:
                self.free.append(worker)
            if exc is not None:
                error = error or exc
            else:
                out.append(Done(worker, tag, value, now - began))
        self.free.sort()
        if error is not None:
            raise error
        return out

    def _lose(self, future: Any) -> None:
        """`future`'s worker is gone: its job runs again in the origin's lane (after the
        origin's own job), under the same worker number, which is given no work after it."""
        worker, tag, began = self._flight.pop(future)
        fn, job, _ = self._jobs.pop(future)
        self._remote.remove(future)
        cluster.abandon(future)
        self.lost.append(worker)
        total = cluster.lost_worker()
        left = len(self.live)
        message = (f"worker {worker} gave no answer within its job's time limit: taken as lost "
                   f"({total} so far); its job runs again on the origin; {left} of {self.width} "
                   "workers go on")
        if left == 1:
            message += ": every other worker is lost, the search goes on at the origin's pace"
        cluster.warn(message)
        key = object()
        self._flight[key] = (worker, tag, began)
        self._here.put((key, fn, job))

    def drain(self) -> List[Done]:
        """Wait for every running job; what they returned."""
        out = []
        while self._flight:
            out += self.wait()
        return out

    def close(self) -> None:
        """Forget the running jobs (a failed run: their answers are not waited for)."""
        self._flight.clear()
        self._remote.clear()
        self._jobs.clear()
        self._here.put(None)
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any],
                 item_limit_s: Optional[float] = None) -> List[Any]:
    """`[fn(x) for x in items]`, spread over SCOOP's workers when running under SCOOP.

    Each worker, the origin included, runs one item at a time and is given the next as soon
    as it is free (Workers), so a slow item holds back no other. `item_limit_s`: the longest
    one item may take (its job's hard limit); an item whose worker has not answered within
    it (plus cluster.LOST_SLACK_S) runs again on the origin, its worker taken as lost; None:
    it is waited for, however long.
    """
    items = list(items)
    if not items:
        return []
    if not cluster.running() or not cluster.is_origin():
        return [fn(item) for item in items]
    workers = Workers(min(cluster.live_workers(), len(items)))
    results: List[Any] = [None] * len(items)
    todo = list(range(len(items)))
    try:
        while todo or workers.busy:
            for worker in list(workers.free):
                if not todo:
                    break
                i = todo.pop(0)
                workers.start(worker, fn, items[i], i, item_limit_s)
            if workers.busy:
                for done in workers.wait():
                    results[done.tag] = done.value
    finally:
        workers.close()
    return results
