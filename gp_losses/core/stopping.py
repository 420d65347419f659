"""Stopping on request: SIGINT and SIGTERM end a search, retrain or final stage the same way.

Inside `stop_on_signals()` both signals raise `Stopped` in the main thread, so the run's own
`except`/`finally` blocks write its status (`interrupted`) and end its sandbox children before
the process exits 130 or 143. A second signal while stopping is ignored: the first one's
clean-up finishes. Outside the main thread (a notebook's worker thread) nothing is installed.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from pathlib import Path
from typing import Iterator

from gp_losses.core.errors import NoSpace, Stopped

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def handler(signum, frame):
        if stopping:  # already stopping: let the clean-up finish
            return
        stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space(exc: OSError, run_dir: Path, kept: str, then: str) -> NoSpace:
    """The message for a write that failed for lack of space: which file, what is kept, what to do."""
    where = exc.filename or run_dir
    return NoSpace(f"no space left on the device of {where}: {kept}; free space there (or copy "
                   f"{run_dir} to a disk with room) and {then}")
