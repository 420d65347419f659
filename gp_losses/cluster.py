"""SCOOP, in one place: whether it runs, its workers, its log, shared constants, and the
internals of SCOOP 0.7 that the origin drives.

Every other module asks here. The public API (futures, shared) is used as documented; what
SCOOP does not offer — sending a future to the broker at once, keeping the origin from taking
back the futures it sent, giving up on a future whose worker is gone — uses SCOOP 0.7's private
origin queue (`_control.execQueue`), checked when a run starts: with a SCOOP release that has
moved those internals, `check()` says what is lost, once, and jobs run on the origin alone.

A SCOOP worker runs jobs; the origin (the process that runs the search) is one of them too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from importlib import metadata
from typing import Any, Callable, Optional, Tuple

TESTED = ("0.7.2.0",)
"""SCOOP releases the internals below were tested with (setup.cfg bounds scoop to 0.7)."""
LOST_SLACK_S = 30.0
"""Added to a job's hard limit before its worker counts as lost (transfer, a busy origin)."""
log = logging.getLogger("gp_losses")


def running() -> bool:
    """Whether this process runs under `python -m scoop`."""
    try:
        import scoop
    except ImportError:  # pragma: no cover - scoop is a dependency
        return False
    return bool(scoop.IS_RUNNING)


def size() -> int:
    """Workers available: SCOOP's pool size (the origin included) under `-m scoop`, else 1."""
    if running():
        import scoop

        return max(1, int(getattr(scoop, "SIZE", 1) or 1))
    return 1


def is_origin() -> bool:
    import scoop

    return bool(scoop.IS_ORIGIN)


def version() -> str:
    try:
        return metadata.version("scoop")
    except metadata.PackageNotFoundError:  # pragma: no cover - scoop is a dependency
        return "unknown"


class Origin:
    """What the origin keeps about SCOOP (one per process): whether SCOOP's own search for
    lost futures has been turned off, and how many workers were lost."""

    def __init__(self) -> None:
        self.patched = False
        self.checked: Optional[bool] = None
        """Whether SCOOP has the internals driven here (None: not looked at yet)."""
        self.lost = 0
        """Workers taken as lost (a job of theirs never answered): SCOOP 0.7 cannot tell which
        process is gone, only that one fewer answers; the next maps send that many fewer."""


ORIGIN = Origin()


def check() -> bool:
    """Whether this SCOOP has the internals the origin drives; warns once, at a run's start,
    when it has not, or when its version is not one tested, saying what is lost."""
    if ORIGIN.checked is None:
        ORIGIN.checked = _has_internals()
        tested = ", ".join(TESTED)
        if not ORIGIN.checked:
            log.warning("SCOOP %s lacks the internals of SCOOP %s that the search drives (the "
                        "origin's queue): jobs run on the origin alone, and a map's futures may "
                        "run twice; install scoop==%s", version(), tested, TESTED[-1])
        elif version() not in TESTED:
            log.warning("SCOOP %s is not a release gp_losses was tested with (%s): if its "
                        "internals changed, workers may idle or a job may run twice", version(), tested)
    return ORIGIN.checked


def _has_internals() -> bool:
    try:
        from scoop import _control

        queue = _control.execQueue
        comm = queue.socket
        return all(hasattr(queue, a) for a in ("movable", "updateQueue", "askForPreviousFutures")) and all(
            hasattr(comm, a) for a in ("socket", "direct_socket", "infoSocket", "sendFuture"))
    except Exception:
        return False


# --- starting SCOOP ----------------------------------------------------------------------------
def launch(args: Any, workers: Optional[int], hostfile: Optional[str] = None, quiet: bool = False,
           quiet_launcher: bool = False) -> int:
    """Run `gp_losses/main.py ARGS` under `python -m scoop [-n WORKERS] [--hostfile FILE]` from
    the installed package (no checkout, no script path); the launcher's exit code. `workers`
    None: the hostfile's worker counts (SCOOP's own default without one). Workers see
    this process's sys.path, so a user's task module imports there too. `quiet`: the
    search's JSON summary (stdout) is dropped; `quiet_launcher`: SCOOP's launcher logs
    nothing but errors (`--quiet`)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py")
    command = [sys.executable, "-m", "scoop"] + (["-n", str(workers)] if workers else []) \
        + (["--quiet"] if quiet_launcher else [])
    if hostfile:
        if not os.path.isfile(hostfile):
            from gp_losses.core.errors import InputError

            raise InputError(f"--hostfile {hostfile!r}: no such file (one host per line: NAME [WORKERS])")
        command += ["--hostfile", hostfile]
    # '' on sys.path (python -c, a notebook) is the current directory: the workers get it too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path))
    log.info("starting SCOOP: %s worker(s)%s", workers or "the hostfile's",
             f", hosts in {hostfile}" if hostfile else "")
    proc = subprocess.Popen(command + [script] + [str(a) for a in args], env=env,
                            stdout=subprocess.DEVNULL if quiet else None)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C here (a notebook's interrupt reaches only this process):
        proc.send_signal(signal.SIGINT)  # the launcher ends its workers, the run says interrupted
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


# --- the log --------------------------------------------------------------------------------
def route_log(path: str) -> None:
    """Send SCOOP's own log (this process's) to the file `path`; the terminal gets one short
    line per warning instead of the whole job's payload, printed twice."""
    if not running():
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


def warn(message: str) -> None:
    """A warning on the terminal (gp_losses' log) and in scoop.log, once each."""
    log.warning(message)
    scoop_log = logging.getLogger("SCOOPLogger")
    record = scoop_log.makeRecord(scoop_log.name, logging.WARNING, __file__, 0, message, None, None, "workers")
    for handler in scoop_log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


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


# --- shared constants -------------------------------------------------------------------------
def share(name: str, value: Any) -> None:
    """Broadcast `value` to every worker, those that join later too (SCOOP's shared module)."""
    from scoop import shared

    if shared.getConst(name, timeout=0) is None:
        shared.setConst(**{name: value})


def shared_value(name: str, timeout: float) -> Any:
    """A value the origin shared; None if it has not arrived within `timeout` seconds."""
    from scoop import shared

    return shared.getConst(name, timeout=timeout)


# --- futures ----------------------------------------------------------------------------------
def submit(fn: Callable[[Any], Any], arg: Any) -> Any:
    """A future of fn(arg), sent to the broker at once, for another worker (left to itself
    SCOOP 0.7 keeps a lone future in the origin's queue, to run it there)."""
    from scoop import _control, futures

    future = futures.submit(fn, arg)
    queue = _control.execQueue
    with contextlib.suppress(ValueError):
        queue.movable.remove(future)
    queue.socket.sendFuture(future)
    return future


def keep_origin_share() -> None:
    """Keep the origin from taking back the futures it sent: left to itself, SCOOP 0.7's origin
    asks the broker for work whenever its own queue runs dry and then runs most futures itself
    (10 of 12 jobs in six two-job maps, measured). And turn off SCOOP's own search for lost
    futures (gp_losses/workers.py finds them: a job past its hard limit).

    SCOOP's version asks the broker, every 2 s while the origin waits, about every future it
    sent away, and sends again any the broker says nobody holds. In SCOOP 0.7 that answer is
    "nobody" for every future a worker holds: the broker drops a worker's futures until its
    first status report (25 s after it starts) and then compares the ids it was sent (pickled
    bytes) with the ids the report lists (tuples), which never match. So a job that outlasts
    the origin's own share ran twice ("Lost track of future ... Resending it": a 60-s job
    beside a 1-s one ran on both processes and the map took 65 s). And a future sent again
    reaches no one once its worker is gone: the broker hands a task only to a worker that asked
    for one, knows of no dead worker, and the origin never asks (the search hung for ever after
    a node was lost)."""
    from scoop import _control

    queue = _control.execQueue
    queue.lowwatermark = 0.0
    if not ORIGIN.patched:
        queue.askForPreviousFutures = _nothing
        ORIGIN.patched = True


def _nothing() -> None:
    """SCOOP's search for lost futures, turned off (keep_origin_share)."""


def abandon(future: Any) -> None:
    """Give up on a future whose worker is gone: SCOOP forgets it, so that a late answer (a
    worker that was only slow) is dropped, never used a second time."""
    future._delete()


def lost_worker() -> int:
    """Count one more worker as lost; how many are."""
    ORIGIN.lost += 1
    return ORIGIN.lost


def live_workers() -> int:
    """SCOOP's workers (the origin included) less those taken as lost; 1 without SCOOP."""
    return max(1, size() - ORIGIN.lost)


def status() -> dict:
    """status.json's `workers` under SCOOP: how many the run started with, are lost, go on."""
    if not running():
        return {}
    return {"workers": {"size": size(), "lost": ORIGIN.lost, "live": live_workers()}}


def update() -> None:
    """Take in what the broker sent (answers)."""
    from scoop import _control

    _control.execQueue.updateQueue()


def outcome(future: Any) -> Tuple[Any, Optional[BaseException]]:
    """(value, exception) of a done future, which is then released."""
    value, error = future.resultValue, future.exceptionValue
    future._delete()
    return value, error


def poller(*extra: int) -> Any:
    """A zmq poller on the origin's SCOOP sockets (answers arrive there) and on `extra` file
    descriptors."""
    import zmq
    from scoop import _control

    comm = _control.execQueue.socket
    polling = zmq.Poller()
    for sock in (comm.socket, comm.direct_socket, comm.infoSocket):
        polling.register(sock, zmq.POLLIN)
    for fd in extra:
        polling.register(fd, zmq.POLLIN)
    return polling
