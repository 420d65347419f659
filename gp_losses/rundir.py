"""A run directory: what a search writes, atomically where a crash could tear it.

    config.yaml         the resolved configuration
    status.json         running / finished / failed, with the reason (the authority on how a
                        run ended: SCOOP's launcher exits 0 even when the script fails)
    evaluations.jsonl   one line per explored loss
    logbook.csv         DEAP Logbook, one row per batch
    hall_of_fame.json   the best losses: expressions, formulas, scores
    checkpoint.pkl      everything needed to resume, written after every batch
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from gp_losses.errors import InputError

CHECKPOINT = "checkpoint.pkl"


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file, fsync, and rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # --- creation and resume ------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, config_yaml: str) -> "RunDir":
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise InputError(f"run directory {str(path)!r} exists and is not empty: "
                             f"use --resume {path} to continue it, or another --out")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        atomic_write(path / "config.yaml", config_yaml.encode())
        (path / "evaluations.jsonl").touch()
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / CHECKPOINT).is_file():
            what = "no such directory" if not path.is_dir() else f"no {CHECKPOINT} in it"
            raise InputError(f"--resume {str(path)!r}: {what}; a run can be resumed once its "
                             "first batch has been checkpointed")
        return cls(path)

    # --- files --------------------------------------------------------------------------
    def write_status(self, state: str, **fields: Any) -> None:
        data = {"state": state, "updated": now(), **fields}
        atomic_write(self.path / "status.json", (json.dumps(data, indent=2) + "\n").encode())

    def read_status(self) -> Dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def append_evaluations(self, records: Iterable[Dict[str, Any]]) -> int:
        """Append JSON lines, flushed to disk; returns the file's new size in bytes."""
        with open(self.path / "evaluations.jsonl", "a") as fh:
            for record in records:
                fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            return fh.tell()

    def truncate_evaluations(self, size: int) -> None:
        """Drop lines written after the last checkpoint (a crash between the two writes)."""
        with open(self.path / "evaluations.jsonl", "r+b") as fh:
            fh.truncate(size)

    def read_evaluations(self) -> List[Dict[str, Any]]:
        with open(self.path / "evaluations.jsonl") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def write_logbook(self, rows: List[Dict[str, Any]]) -> None:
        if not rows:
            return
        header: List[str] = []
        for row in rows:
            header.extend(k for k in row if k not in header)
        tmp = self.path / ".logbook.csv.tmp"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path / "logbook.csv")

    def write_json(self, name: str, data: Any) -> None:
        atomic_write(self.path / name, (json.dumps(data, indent=2) + "\n").encode())

    def save_checkpoint(self, state: Any) -> None:
        atomic_write(self.path / CHECKPOINT, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    def load_checkpoint(self) -> Any:
        with open(self.path / CHECKPOINT, "rb") as fh:
            return pickle.load(fh)

    def config_text(self) -> Optional[str]:
        path = self.path / "config.yaml"
        return path.read_text() if path.is_file() else None
