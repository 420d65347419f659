"""Experiment tracking: a run's TensorBoard events (`search.tensorboard`), in RUN/tensorboard/.

The search writes each logbook row as scalars at its batch (`search/best`, `search/explored`,
…) and, at its end, the hall of fame as text; a retrain writes each loss's mean and standard
deviation per metric (`retrain-<schedule>/<split>/<metric>/<loss>`). `tensorboard --logdir RUN` shows
them. Off by default; it needs the `tensorboard` package (`pip install 'gp-losses[tensorboard]'`).
A resumed search drops the events its killed predecessor wrote after the checkpoint it resumes
from, so every batch has one value per tag.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from gp_losses.core.options import ConfigError

FOLDER = "tensorboard"


def check_available() -> None:
    """ConfigError unless torch's TensorBoard writer can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"search.tensorboard: needs the tensorboard package ({exc}); install it "
                          "with pip install 'gp-losses[tensorboard]' or set search.tensorboard: false") from None


class Board:
    """The TensorBoard writer of one run directory; `purge_step`: events at this step and
    later, from an earlier process, are dropped (a resume)."""

    def __init__(self, run_dir: Path, purge_step: Optional[int] = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / FOLDER), purge_step=purge_step)

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Each finite number of `values` as `prefix/key` at `step`."""
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def hall_of_fame_text(hall: List[Dict[str, Any]]) -> str:
    """The hall of fame as a Markdown table: rank, score, each branch's expression."""
    lines = ["| rank | score | loss |", "|---|---|---|"]
    for entry in hall:
        loss = "; ".join(f"{branch}: `{expr}`" for branch, expr in entry["expr"].items())
        lines.append(f"| {entry['rank']} | {entry['score']:.4f} | {loss} |")
    return "\n".join(lines)


def write_retrain(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """A retrain's rows, tagged `retrain-<schedule>/<split>/<metric>/<loss>` (`final/…` for the
    search's finalists): per metric and loss, the mean and the standard deviation over the
    seeds that trained, at the step of the number of seeds (a retrain with more seeds adds a
    point); a loss that failed has none."""
    schedule = summary["schedule"]
    prefix = "final" if schedule == "final" else f"retrain-{schedule}"
    step = len(summary["seeds"])
    board = Board(run_dir, purge_step=None)
    try:
        for row in summary["rows"]:
            for stat, suffix in (("mean", ""), ("std", "_std")):
                for metric, value in row[stat].items():
                    if value is not None:
                        board.scalars(f"{prefix}/{summary['split']}/{metric}{suffix}", {row["name"]: value}, step)
    finally:
        board.close()
