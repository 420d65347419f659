"""Where built-in tasks write the data they generate, and the lock that makes workers starting
together generate it once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable


def default_cache() -> Path:
    """$XDG_CACHE_HOME/gp_losses, else ~/.cache/gp_losses."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gp_losses"


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on the file `path`, so that workers starting together generate the
    data once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def dataset_root(options, name: str, write: Callable[[Path], object]) -> Path:
    """Where a task reads its data: `options.data_root` when one is given; else the built-in
    synthetic data's directory `name` (which names what shaped the data) in `options.cache_dir`
    or the default cache, written there once by `write(root)` under a lock."""
    if options.data_root:
        return Path(options.data_root)
    cache = Path(options.cache_dir) if options.cache_dir else default_cache()
    root = cache / name
    with locked(cache / f".{name}.lock"):
        write(root)
    return root
