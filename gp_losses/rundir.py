"""A run directory: what a search writes, atomically where a crash could tear it.

    config.yaml         the resolved configuration
    status.json         running / finished / failed, with the reason, and the host and pid of
                        the process that owns the run (the authority on how a run ended:
                        SCOOP's launcher exits 0 even when the script fails)
    evaluations.jsonl   one line per explored loss
    logbook.csv         DEAP Logbook, one row per batch
    hall_of_fame.json   the best losses: expressions, scores (formulas made at the end)
    baselines.json      the task's baselines trained with the best loss's seed (at the end)
    noise.json          the best loss over further proxy seeds (`search.noise_seeds` > 0)
    final.json          the search's pick among the top K, trained longer on val (`final.top`
    final.md, .csv      > 0; gp_losses/final.py); their trainings in retrain/
    checkpoint.pkl      everything needed to resume, written after every batch
    progress.png        top-5 score and loss counts against evaluations (gp_losses/plot.py)
    scoop.log           SCOOP's own log, under `python -m scoop`
    retrain/            `gp-losses retrain`: trainings.jsonl, report.md, report.csv
    .lock               held (flock) by the process that owns the run: one search at a time
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import json
import os
import pickle
import socket
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from gp_losses import __version__
from gp_losses.core.errors import InputError

CHECKPOINT = "checkpoint.pkl"
CHECKPOINT_FORMAT = 5
"""Incremented whenever what a checkpoint holds changes; a checkpoint of another format is refused."""
LOCK = ".lock"


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


def search_pick(run: Path) -> int:
    """The hall rank of a run's result: final.json's pick where the search chose among
    finalists (gp_losses/final.py), else 1, the hall's first (as in the paper)."""
    return RunDir(run).read_json("final.json", {}).get("pick") or 1


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: Optional[Any] = None

    # --- creation, resume, ownership ----------------------------------------------------
    @classmethod
    def create(cls, path: Path, config_yaml: str) -> "RunDir":
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {str(path)!r} is a file, not a directory")
        run = cls(path)
        if run.has_files():  # checked before the lock, so that no .lock is left in a user's folder
            run.refuse_existing()
        path.mkdir(parents=True, exist_ok=True)
        run.lock()
        if run.has_files():  # another search wrote here between the check and the lock
            run.refuse_existing()
        atomic_write(path / "config.yaml", config_yaml.encode())
        (path / "evaluations.jsonl").touch()
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        """A run to resume: any directory a search has written its config.yaml into."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            what = "no such directory" if not path.is_dir() else "no config.yaml in it"
            raise InputError(f"--resume {str(path)!r}: {what}; give the directory of a run "
                             "(start a new one with --task and --out)")
        run = cls(path)
        run.lock()
        return run

    def lock(self) -> None:
        """Own the run: an exclusive lock on .lock, held until release() or the process ends."""
        fh = open(self.path / LOCK, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise InputError(f"run directory {str(self.path)!r} is in use by another search "
                             f"({owner}); wait for it to end, or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._lock = fh

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def has_files(self) -> bool:
        return self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())

    def refuse_existing(self) -> None:
        """InputError for a directory that holds a run: in use by a search, or not empty."""
        if self._lock is None and (self.path / LOCK).exists():
            self.lock()  # InputError naming the owner when a search holds it
        self.release()
        raise InputError(f"run directory {str(self.path)!r} exists and is not empty: "
                         f"use --resume {self.path} to continue it, or another --out")

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    # --- files --------------------------------------------------------------------------
    def write_status(self, state: str, **fields: Any) -> None:
        data = {"state": state, "updated": now(), "host": socket.gethostname(), "pid": os.getpid(),
                **fields}
        atomic_write(self.path / "status.json", (json.dumps(data, indent=2) + "\n").encode())

    def read_status(self) -> Dict[str, Any]:
        try:
            return json.loads((self.path / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def owned_status(self) -> Dict[str, Any]:
        """status.json, where a run that says `running` but whose owner process is gone (it was
        killed) reads `stale`. An owner on another host cannot be checked from here."""
        status = self.read_status()
        if status.get("state") != "running" or status.get("host") != socket.gethostname():
            return status
        try:
            os.kill(int(status["pid"]), 0)
        except ProcessLookupError:
            return {**status, "state": "stale", "note": f"status.json says running, but its owner "
                    f"(pid {status['pid']}) is gone: resume it with --resume {self.path}"}
        except (OSError, KeyError, ValueError):
            pass
        return status

    def append_lines(self, lines: Iterable[str]) -> int:
        """Append lines of JSON to evaluations.jsonl, flushed to disk; its new size in bytes."""
        with open(self.path / "evaluations.jsonl", "a") as fh:
            for line in lines:
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            return fh.tell()

    def truncate_evaluations(self, size: int) -> None:
        """Drop lines written after the last checkpoint (a crash between the two writes)."""
        with open(self.path / "evaluations.jsonl", "a+b") as fh:
            fh.truncate(size)

    def read_evaluations(self) -> List[Dict[str, Any]]:
        """evaluations.jsonl's records ([] without one)."""
        if not (self.path / "evaluations.jsonl").is_file():
            return []
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

    def read_json(self, name: str, default: Any) -> Any:
        """A JSON file of the run (hall_of_fame.json, baselines.json, final.json), or `default`
        when the run has not written it."""
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else default

    def hall_of_fame(self) -> List[Dict[str, Any]]:
        """hall_of_fame.json's entries, best first ([] before the first scored batch)."""
        return self.read_json("hall_of_fame.json", [])

    def read_logbook(self) -> List[Dict[str, str]]:
        """logbook.csv's rows as text ([] without one)."""
        path = self.path / "logbook.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    def save_checkpoint(self, state: Any) -> None:
        data = {"format": CHECKPOINT_FORMAT, "version": __version__, "state": state}
        atomic_write(self.path / CHECKPOINT, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))

    def load_checkpoint(self) -> Any:
        """The state the last checkpoint holds; InputError for a file that is damaged or was
        written by another version."""
        path = self.path / CHECKPOINT
        try:
            with open(path, "rb") as fh:
                data = pickle.load(fh)
        except Exception as exc:  # truncated, corrupt, or classes this version does not have
            raise InputError(f"{str(path)!r} cannot be read ({type(exc).__name__}: {exc}): it is "
                             "damaged or from another version of gp-losses. Restore it from a copy, "
                             "delete it to restart the run from its config.yaml, or start a new "
                             "run with --out") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            written = (f"gp-losses {data.get('version')} (checkpoint format {data.get('format')})"
                       if isinstance(data, dict) else "another version of gp-losses")
            raise InputError(f"{str(path)!r} was written by {written}; this is gp-losses "
                             f"{__version__} (format {CHECKPOINT_FORMAT}). Resume it with that "
                             "version, or delete it to restart the run from its config.yaml")
        return data["state"]

    def config_text(self) -> Optional[str]:
        path = self.path / "config.yaml"
        return path.read_text() if path.is_file() else None
