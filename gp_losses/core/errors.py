"""One exception hierarchy; the CLI maps it to exit codes (2 bad input, 1 anything else)."""

from __future__ import annotations

import difflib
import traceback
from typing import Iterable, Optional


class GpLossesError(Exception):
    """Base class of every error the project raises on purpose."""

    exit_code = 1


class InputError(GpLossesError):
    """Bad input from the user: a flag, a config value, a loss string, a data path."""

    exit_code = 2


class ParseError(InputError):
    """A loss expression that the parser cannot read."""


class OperatorError(InputError):
    """An operator definition that is malformed or misbehaves on random tensors."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the nearest of `choices`, or '' when none is close."""
    match: Optional[list] = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class TaskSetupError(GpLossesError):
    """A task's data loading or generation (`setup`) failed: no candidate can be evaluated, so
    the run stops. Exit code 2 when the task's own error was bad input (a wrong data path)."""

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message, bad_input)  # both in args: the error pickles across processes
        self.exit_code = 2 if bad_input else 1

    def __str__(self) -> str:
        return str(self.args[0])


class RunFailed(GpLossesError):
    """The search cannot go on (most of its jobs fail, no candidate passes the protocol)."""


class Stopped(KeyboardInterrupt):
    """A stop asked for from outside: SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's preemption
    or time limit). Exit code 128 + the signal's number, as a shell reports it (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"stopped by {self.name}"


class NoSpace(RunFailed):
    """A write under the run directory failed for lack of space (ENOSPC)."""


def describe(exc: BaseException) -> str:
    """'Type: message (file:line)' of an exception, at the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
