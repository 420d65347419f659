"""A worker's sandbox: the child process that holds the run's task and runs the worker's jobs
(gp_losses/sandboxed.py), and dies alone.

Every worker — the one process of a serial run, each SCOOP worker, the origin among them —
sends its jobs to its own sandbox and waits for the answer. The child dying (a segfault,
os._exit, an out-of-memory kill) shows up here as a closed pipe: the job is run again in a
fresh child up to `proxy.retries` times, then reported as ProcessDied, and the worker carries
on. A child that does not answer within the job's hard limit is killed (JobTimeout): its own
SIGALRM limit, a little shorter, normally answers first. Whether a job finished is decided by
whether its answer arrived, so a finished job is never reported as a timeout.

On Linux, for a run on CPU, a sandbox is forked from the process's sandbox starter
(`Starter`), a child that imported torch and the engine once: a fresh interpreter spends
seconds on those imports, a fork a few milliseconds, so that a sandbox started again after a
death, or the next run's in the same Python session, is ready at once. The sandbox is a
process of its own either way, with this process's working directory and environment. In
gp-losses' own programs (`fork_starter_from_here`) the first starter is itself a fork of the
process, which has imported torch already, instead of a fresh interpreter importing it again.

No torch here: a process that only relays jobs stays small.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Dict, Optional

from gp_losses.core.errors import TaskSetupError
from gp_losses.messages import FORK_ANSWER, STARTED, Init, Job, RunSpec, SetupFailed

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
        self.proc: Any = None
        """The child: a subprocess.Popen, or a Forked with the same wait() and kill()."""
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
        self.proc = fork_sandbox(env, from_parent, to_parent) if on_cpu(self.spec) else None
        if self.proc is None:  # no starter here: a fresh interpreter, on pipes no other child holds
            for fd in (to_child, from_parent, to_parent, from_child):
                os.close(fd)
            to_child, from_parent = os.pipe()[::-1]
            to_parent, from_child = os.pipe()[::-1]
            code = (f"import sys; sys.path.insert(0, {ROOT!r}); from gp_losses.sandboxed import main; "
                    f"main({from_parent}, {to_parent}, {os.getpid()})")
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(from_parent, to_parent),
                                         stdin=subprocess.DEVNULL, stdout=_sandbox_stdout(), env=env)
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


class Starter:
    """A child process that has imported the sandbox's modules once and forks each sandbox of
    this process from itself (gp_losses.sandboxed.serve_forks), in `env`. It ends with this
    process, and after `close()` once its sandboxes have."""

    def __init__(self, env: Dict[str, str], here: bool = False) -> None:
        """A fresh interpreter, or with `here` a fork of this process (fork_starter_from_here)."""
        self.key = starter_key(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if here:
            self.proc: Any = _fork_starter(theirs)
        else:
            code = STARTER_CODE.format(root=ROOT, sock=theirs.fileno(), relay=os.getpid())
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),),
                                         stdin=subprocess.DEVNULL, stdout=_sandbox_stdout(), env=env)
        theirs.close()
        self.sock = ours
        self.alive = True
        """Until it has ended (the socket's end)."""
        self.closed = False
        """Whether close() was called: it forks no more sandboxes."""
        self.started = False
        """Whether it has forked a sandbox: a starter that dies before that cannot start here."""
        self._request = threading.Lock()
        self._pids: "queue.SimpleQueue[Optional[int]]" = queue.SimpleQueue()
        self._ended: Dict[int, int] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._listen, daemon=True, name="gp_losses-starter").start()

    def _listen(self) -> None:
        size = struct.calcsize(FORK_ANSWER)
        while True:
            try:
                data = self.sock.recv(size)
            except OSError:
                data = b""
            if len(data) != size:
                break
            kind, pid, code = struct.unpack(FORK_ANSWER, data)
            if kind == STARTED:
                self._pids.put(pid)
            else:
                with self._changed:
                    self._ended[pid] = code
                    self._changed.notify_all()
        with self._changed:
            self.alive = False
            self._changed.notify_all()
        self._pids.put(None)
        self.proc.wait()
        with self._request:  # never while fork() sends on it
            self.sock.close()

    def fork(self, read_fd: int, write_fd: int, env: Dict[str, str]) -> Optional["Forked"]:
        """A sandbox on these pipe ends, in this directory and `env`, or None if the starter
        has ended."""
        with self._request:
            if not self.alive or self.closed:
                return None
            opened = []
            fds = [read_fd, write_fd]
            for fd in (_sandbox_stdout(), _open_or_devnull(2)):  # its stdout, its stderr
                if fd == subprocess.DEVNULL:
                    fd = os.open(os.devnull, os.O_WRONLY)
                    opened.append(fd)
                fds.append(fd)
            try:
                request = json.dumps({"cwd": os.getcwd(), "env": env}).encode()
                socket.send_fds(self.sock, [request], fds)
            except OSError:
                return None
            finally:
                for fd in opened:
                    os.close(fd)
            try:
                pid = self._pids.get()
            except BaseException:  # interrupted (Ctrl-C, SIGTERM): its answer would answer the next request
                self.closed = True
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_WR)
                raise
        if not pid:  # None: the starter ended; 0: it could not fork
            return None
        self.started = True
        return Forked(self, pid)

    def ended(self, pid: int, timeout: Optional[float]) -> Optional[int]:
        """Sandbox `pid`'s exit code once it has ended (SIGKILL's if the starter died first: its
        sandboxes die with it), or None after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._ended or not self.alive, timeout)
            if pid in self._ended:
                return self._ended.pop(pid)
            return None if self.alive else -signal.SIGKILL

    def kill(self, pid: int) -> None:
        """SIGKILL to sandbox `pid`, unless it has ended (reaped, its pid may be another's now)."""
        with self._changed:
            if pid in self._ended:
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """No more sandboxes: the starter ends once those it started have."""
        with self._request:
            if self.closed or not self.alive:
                return
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class Forked:
    """A sandbox forked by a Starter, as a subprocess.Popen would show it."""

    def __init__(self, starter: Starter, pid: int) -> None:
        self.starter, self.pid = starter, pid
        self.returncode: Optional[int] = None

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            code = self.starter.ended(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(f"sandbox {self.pid}", timeout or 0.0)
            self.returncode = code
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            self.starter.kill(self.pid)


class ChildProcess:
    """A child forked by this process, as a subprocess.Popen would show it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: how it ended is lost
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


STARTER_SOCKET_FD = 3
"""The descriptor of a forked starter's socket: every other one but 0-2 is closed there."""


def _fork_starter(sock: socket.socket) -> ChildProcess:
    """A starter forked from this process: it keeps this process's imports (torch among them)
    and, like a fresh interpreter, nothing else of it: stdin from /dev/null, stdout to this
    process's stderr, no other descriptor (a run directory's lock, a SCOOP socket) but its
    end of `sock`, default signal handlers, logging not set up."""
    for stream in (sys.stdout, sys.stderr):  # what is buffered would be written twice
        with contextlib.suppress(Exception):
            stream.flush()
    relay, out = os.getpid(), _sandbox_stdout()
    pid = os.fork()
    if pid:
        return ChildProcess(pid)
    try:
        os.dup2(sock.fileno(), STARTER_SOCKET_FD)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null if out == subprocess.DEVNULL else out, 1)
        os.closerange(STARTER_SOCKET_FD + 1, _max_fd())
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, signal.SIG_DFL)
        import logging

        logging.root.handlers.clear()
        logging.root.setLevel(logging.WARNING)
        from gp_losses.sandboxed import serve_forks

        serve_forks(STARTER_SOCKET_FD, relay)  # ends the process itself
    except BaseException:
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(1)


def _max_fd() -> int:
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (ValueError, OSError):
        return 1 << 16


STARTER_CODE = ("import sys; sys.path.insert(0, {root!r}); from gp_losses.sandboxed import serve_forks; "
                "serve_forks({sock}, {relay})")
_STARTER: Optional[Starter] = None
_STARTER_LOCK = threading.Lock()
_NO_STARTER = not sys.platform.startswith("linux")
"""Forking a sandbox from a starter is for Linux, and off once a starter died unused."""
_FORK_HERE = False
"""Whether this process's next starter is forked from it (fork_starter_from_here)."""


def fork_starter_from_here() -> None:
    """Say that this process is a gp-losses program — the `gp-losses` command, gp_losses/main.py
    in each SCOOP process — that does no torch work of its own before its first sandbox: its
    first starter is then a fork of it, with its imports done (torch, where it imported torch),
    instead of a fresh interpreter that imports them again (2-3 s of CPU). Not for a Python session (the API, a
    test suite), which may have run torch work: with GNU OpenMP, a child forked after a
    parallel region can hang in its next one. Later starters (after a change of environment)
    are fresh interpreters in every process."""
    global _FORK_HERE
    _FORK_HERE = sys.platform.startswith("linux")


def _forget_starter() -> None:
    """In a child forked from this process (a DataLoader worker, say): the parent's starter is
    not this process's, and a lock another thread held at the fork stays held here."""
    global _STARTER, _STARTER_LOCK, _FORK_HERE
    _FORK_HERE = False
    if _STARTER is not None:
        try:
            _STARTER.sock.close()
        except OSError:
            pass
    _STARTER, _STARTER_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_starter)


def fork_sandbox(env: Dict[str, str], read_fd: int, write_fd: int) -> Optional[Forked]:
    """A sandbox in `env`, forked from this process's starter (a new starter if the
    environment changed: the old one ends once its sandboxes have), or None where there is none."""
    global _STARTER, _NO_STARTER, _FORK_HERE
    with _STARTER_LOCK:
        if _NO_STARTER:
            return None
        if _STARTER is not None and (_STARTER.key != starter_key(env) or not _STARTER.alive or _STARTER.closed):
            _STARTER.close()
            _STARTER = None
        if _STARTER is None:
            _STARTER, _FORK_HERE = Starter(env, here=_FORK_HERE), False
        child = _STARTER.fork(read_fd, write_fd, env)
        if child is None:
            if not _STARTER.started:  # it cannot start here (a broken import?): fresh interpreters say why
                _NO_STARTER = True
            _STARTER.close()
            _STARTER = None
        return child


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")
"""Present where NVIDIA's or AMD's GPU driver is loaded."""


def on_cpu(spec: RunSpec) -> bool:
    """Whether the run's sandboxes run on CPU (`proxy.device` cpu, or auto with no GPU driver
    loaded): only those fork from a starter, since CUDA does not work in a process forked
    after its parent used the driver, and a starter's imports may query it."""
    device = spec.config["proxy"]["device"]
    return device == "cpu" or device == "auto" and not any(os.path.exists(f) for f in GPU_DEVICE_FILES)


VOLATILE_ENV = ("PYTEST_CURRENT_TEST",)
"""Variables that change during a process's life and bear on no import: a change in one of
them starts no new starter (the sandbox has the value of its own start all the same)."""


def starter_key(env: Dict[str, str]) -> Dict[str, str]:
    """What a starter must have been started with to fork a sandbox for `env`: the same
    environment (imports may read it), but for VOLATILE_ENV."""
    return {k: v for k, v in env.items() if k not in VOLATILE_ENV}


def _sandbox_stdout() -> int:
    """Where a sandbox's stdout goes: this process's stderr (stdout is for JSON)."""
    return sys.__stderr__.fileno() if sys.__stderr__ else subprocess.DEVNULL


def _open_or_devnull(fd: int) -> int:
    """`fd` if it is open, else subprocess.DEVNULL."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return subprocess.DEVNULL


def open_sandbox(spec: RunSpec, index: int = 0) -> Any:
    """A sandbox for the run (with `proxy.isolate: false`, a stand-in that runs the jobs in this
    process); `index` is the worker's slot on its node, which picks its GPU."""
    if spec.config["proxy"]["isolate"]:
        return Sandbox(spec, index)
    from gp_losses.sandboxed import InProcess  # imports torch: only where jobs run here

    return InProcess(spec, index)
