"""The skeleton that the dataset tasks (seg, det, pose) share."""

from __future__ import annotations

import math
from typing import Any


def schedule_length(options: Any, samples: int) -> int:
    """A proxy's training iterations: `options.epochs` passes over `samples` training samples
    in batches of `options.batch_size` when epochs > 0, else `options.iterations`."""
    if options.epochs > 0:
        return max(1, math.ceil(options.epochs * samples / options.batch_size))
    return options.iterations

