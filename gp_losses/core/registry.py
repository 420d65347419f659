"""A name -> object registry, as small as fvcore's, with a `package.module:NAME` fallback.

Registries are filled explicitly (`primitives/__init__.py`, `tasks/__init__.py`); nothing
registers itself at import time. An entry may be a dotted path, imported on first use, so
that naming one built-in task does not import the others (and what they import).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

from gp_losses.core.errors import InputError, did_you_mean

T = TypeVar("T")


def import_user_module(name: str) -> Any:
    """Import a user's module, also from the current directory: `python -m` puts it on
    sys.path, a console script (`gp-losses`) does not. It is appended, so that it never
    shadows an installed package."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = name.partition(".")[0]
        if exc.name != top or cwd in (os.path.abspath(p or ".") for p in sys.path):
            raise
        sys.path.append(cwd)
        return importlib.import_module(name)


def load_dotted(path: str, what: str = "object") -> Any:
    """Import `package.module:NAME` and return NAME; a clear InputError when it is not there."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"{what} {path!r}: expected a dotted path 'package.module:NAME'")
    try:
        module = import_user_module(module_name)
    except ImportError as exc:
        raise InputError(f"{what} {path!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise InputError(
            f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}"
            + did_you_mean(attr, names)
        ) from None


class Registry(Generic[T]):
    """A dict of named objects; registering a name twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}
        self._paths: Dict[str, str] = {}
        """Entries registered by dotted path and not imported yet."""
        self._names: List[str] = []

    def register(self, name: str, obj: T) -> T:
        self._add(name)
        self._items[name] = obj
        return obj

    def register_path(self, name: str, path: str) -> None:
        """Register `name` as the object at `package.module:NAME`, imported on first get()."""
        self._add(name)
        self._paths[name] = path

    def _add(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._names.append(name)

    def register_local(self, name: str, obj: T) -> None:
        """`name` as `obj` in this process only, replacing an earlier local entry of that name
        (a class defined again in a notebook); never listed among the registered names."""
        self._items[name] = obj

    def decorator(self, name: str) -> Callable[[T], T]:
        return lambda obj: self.register(name, obj)

    def get(self, name: str) -> T:
        """The object registered as `name`, or the one a `package.module:NAME` path names."""
        if name in self._paths:  # kept until its import succeeds: a failed one fails again alike
            self._items[name] = load_dotted(self._paths[name], self.kind)
            del self._paths[name]
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return load_dotted(name, self.kind)
        known = ", ".join(sorted(self._names)) or f"no built-in {self.kind} yet"
        raise InputError(
            f"unknown {self.kind} {name!r}" + did_you_mean(name, self._names)
            + f"; known: {known}; or give a path 'package.module:NAME'"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        """The names, in the order they were registered."""
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)
