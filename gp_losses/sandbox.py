"""A worker's sandbox: the child process that holds the run's task and runs the worker's jobs
(gp_losses/sandboxed.py), and dies alone.

Every worker — the one process of a serial run, each SCOOP worker, the origin among them —
sends its jobs to its own sandbox and waits for the answer. The child dying (a segfault,
os._exit, an out-of-memory kill) shows up here as a closed pipe: the job is run again in a
fresh child up to `proxy.retries` times, then reported as ProcessDied, and the worker carries
on. A child that does not answer within the job's hard limit is killed (JobTimeout): its own
SIGALRM limit, a little shorter, normally answers first. Whether a job finished is decided by
whether its answer arrived, so a finished job is never reported as a timeout.

No torch here: a process that only relays jobs stays small.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

from gp_losses.core.errors import TaskSetupError
from gp_losses.messages import Init, Job, RunSpec, SetupFailed

ROOT = str(Path(__file__).resolve().parent.parent)
GRACE_S = 10.0
"""How much longer than a job's own time limit the parent waits before killing the child."""


class ProcessDied(Exception):
    """The child process died during a job, on every attempt."""


class JobTimeout(Exception):
    """The child did not answer within the job's hard limit and was killed."""


def hard_limit(seconds: float) -> float:
    return seconds + max(GRACE_S, 0.1 * seconds)


class Sandbox:
    """One child process holding the run's task; started on first use, restarted after a death."""

    def __init__(self, spec: RunSpec, index: int = 0) -> None:
        self.spec = spec
        self.index = index
        self.retries = int(spec.config["proxy"]["retries"])
        self.proc: Optional[subprocess.Popen] = None
        self._send: Optional[Connection] = None
        self._recv: Optional[Connection] = None
        self.busy = False

    def start(self) -> None:
        """Start the child and set up the task in it (no time limit: data may take long to load).
        TaskSetupError if the task cannot be set up."""
        if self.proc is not None:
            return
        to_child, from_parent = os.pipe()[::-1]
        to_parent, from_child = os.pipe()[::-1]
        threads = str(self.spec.config["proxy"]["threads"])
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        code = (f"import sys; sys.path.insert(0, {ROOT!r}); from gp_losses.sandboxed import main; "
                f"main({from_parent}, {to_parent}, {os.getpid()})")
        stdout = sys.__stderr__.fileno() if sys.__stderr__ else subprocess.DEVNULL  # stdout is for JSON
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(from_parent, to_parent),
                                     stdin=subprocess.DEVNULL, stdout=stdout, env=env)
        os.close(from_parent)
        os.close(to_parent)
        self._send, self._recv = Connection(to_child, readable=False), Connection(from_child, writable=False)
        self._send.send(Init(self.spec, self.index, tuple(sys.path)))
        try:
            answer = self._answer(None)
        except ProcessDied as exc:
            self.close()
            raise TaskSetupError(f"task setup: the sandbox died ({exc})") from None
        if isinstance(answer, SetupFailed):
            self.close()
            raise TaskSetupError(answer.message, answer.bad_input)

    def call(self, job: Job, timeout: float) -> Any:
        """Run one job in the child; its result, or ProcessDied / JobTimeout."""
        for _ in range(1 + self.retries):
            self.start()
            try:
                self.busy = True
                self._send.send(job)
                answer = self._answer(timeout)
                self.busy = False
                return answer
            except (ProcessDied, BrokenPipeError) as exc:
                death = str(exc) if isinstance(exc, ProcessDied) else self._reap()
                self.close()
        raise ProcessDied(f"process died: {death}; {1 + self.retries} attempt(s)")

    def _answer(self, timeout: Optional[float]) -> Any:
        if not self._recv.poll(timeout):
            self.close(kill=True)
            raise JobTimeout(f"no answer in {timeout:g} s: the sandbox was killed")
        try:
            return self._recv.recv()
        except (EOFError, OSError):
            raise ProcessDied(self._reap()) from None

    def _reap(self) -> str:
        """How the child ended, once it has: 'signal 11 (SIGSEGV)' or 'exit code 3'."""
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                return f"signal {-code} ({signal.Signals(-code).name})"
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"

    def close(self, kill: bool = False) -> None:
        """End the child: close its pipe (it exits once idle), or kill it (also when it is in the
        middle of a job, e.g. after Ctrl-C in the parent)."""
        kill = kill or self.busy
        self.busy = False
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if self.proc is not None:
            if kill:
                self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def open_sandbox(spec: RunSpec, index: int = 0) -> Any:
    """A sandbox for the run (with `proxy.isolate: false`, a stand-in that runs the jobs in this
    process); `index` is the worker's slot on its node, which picks its GPU."""
    if spec.config["proxy"]["isolate"]:
        return Sandbox(spec, index)
    from gp_losses.sandboxed import InProcess  # imports torch: only where jobs run here

    return InProcess(spec, index)
