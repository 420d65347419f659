"""retrain/trainings.jsonl: the trainings of `gp-losses retrain` and of a search's final
stage, one line each as it ends, under a lock of their own; a killed retrain rerun later
trains only what is missing. A failed training (error, timeout) is recorded and trained again
next time; it never counts as a result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, NamedTuple, Sequence

from tqdm import tqdm

from gp_losses import cluster
from gp_losses.core.errors import InputError
from gp_losses.jobs import start_workers, train_job
from gp_losses.messages import RunSpec, TrainJob
from gp_losses.outcomes import Training
from gp_losses.sandbox import hard_limit
from gp_losses.workers import parallel_map


def training_key(entry_expr: Dict[str, str], seed: int, split: str, config) -> str:
    """What identifies a training: the loss, the seed, the scored split, and what of the
    config decides how it trains (the task, its options and metric, stopping invalid runs)."""
    what = [config.task.name, config.task.metric, dict(config.task.options), config.search.stop_invalid]
    text = json.dumps([entry_expr, seed, split, what], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def retrain_seed(k: int) -> int:
    """Seed of the k-th retraining of each loss (1, 2, ...): every loss sees the same seeds."""
    return k + 1


class Trainings:
    """retrain/trainings.jsonl: the latest result of each training by key. A line torn by a
    kill mid-write is cut off, so that the next line starts clean."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.latest: Dict[str, Training] = {}
        text = path.read_text() if path.is_file() else ""
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
            with open(path, "r+") as fh:
                fh.truncate(len(text.encode()))
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                self.latest[record["key"]] = Training.from_dict(record["result"])

    def done(self, key: str) -> bool:
        """Whether the training has a result to keep: ok or invalid are facts about the loss;
        an error or a timeout is trained again."""
        return key in self.latest and self.latest[key].reusable

    def append(self, key: str, loss: str, seed: int, result: Training) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"key": key, "loss": loss, "seed": seed, "result": result.to_dict()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.latest[key] = result


@contextlib.contextmanager
def locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{str(folder)!r} is in use by another retrain; wait for it to end") from None
        yield


class Wanted(NamedTuple):
    """A training a retrain wants: its key, the loss's name and {branch: expr}, the seed."""

    key: str
    name: str
    expr: Dict[str, str]
    seed: int


def train_missing(spec: RunSpec, todo: Sequence[Wanted], trainings: Trainings) -> None:
    """Train each training of `todo` that `trainings` has no result to keep for, a round of
    one training per worker at a time, each appended as it ends."""
    missing = [w for w in todo if not trainings.done(w.key)]
    if not missing:
        return
    start_workers(spec)
    width = cluster.live_workers()
    limit = hard_limit(spec.config["proxy"]["timeout_s"])
    with tqdm(total=len(missing), desc="trainings", unit="run", dynamic_ncols=True) as bar:
        for at in range(0, len(missing), width):
            chunk = missing[at:at + width]
            results = parallel_map(train_job, [TrainJob(spec.key, w.expr, w.seed) for w in chunk],
                                   item_limit_s=limit)
            for w, result in zip(chunk, results):
                trainings.append(w.key, w.name, w.seed, result)
            bar.update(len(chunk))
