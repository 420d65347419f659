"""One exception hierarchy; the CLI maps it to exit codes (2 bad input, 1 anything else)."""

from __future__ import annotations

import difflib
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
