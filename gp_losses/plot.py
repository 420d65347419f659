"""Pictures of a search, drawn from its logbook.csv (matplotlib, headless).

Two panels, as the paper's Fig. 4 and what it leaves out: the mean score of the five best
losses in the population against proxy evaluations (or wall time), and the candidates
explored, rejected (by reason), reused and invalid, on a log scale. A search redraws
`progress.png` in its run directory as it goes; `gp-losses plot RUN_DIR ... -o FILE` overlays
several runs (an ablation, seeds of one setting).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from gp_losses.core.errors import InputError
from gp_losses.outcomes import REASONS
from gp_losses.rundir import RunDir

X_AXES = {"evaluations": ("evaluations", "proxy evaluations"),
          "seconds": ("seconds_wall", "wall time of the search (s)")}
"""--x choices: logbook column and axis label."""


def read_logbook(run_dir: Path) -> List[Dict[str, float]]:
    """logbook.csv's rows as numbers (an empty cell is NaN); InputError without one."""
    if not (Path(run_dir) / "logbook.csv").is_file():
        raise InputError(f"{str(run_dir)!r}: no logbook.csv; give the directory of a search "
                         "that has finished at least one batch")
    return [{k: _float(v) for k, v in row.items()} for row in RunDir(Path(run_dir)).read_logbook()]


def _float(text: Optional[str]) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _column(rows: List[Dict[str, float]], key: str) -> List[float]:
    return [row.get(key, math.nan) for row in rows]


def figure(runs: Sequence[tuple], x: str = "evaluations", title: str = ""):
    """A two-panel Figure of `runs`, a list of (label, logbook rows)."""
    from matplotlib.figure import Figure

    if x not in X_AXES:
        raise InputError(f"--x {x!r}: expected one of {', '.join(X_AXES)}")
    key, label = X_AXES[x]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    score, counts = fig.subplots(1, 2)
    single = len(runs) == 1
    colors = [f"C{k % 10}" for k in range(len(runs))]
    for (name, rows), color in zip(runs, colors):
        xs = _column(rows, key)
        score.plot(xs, _column(rows, "top5"), color=color, label=f"{name}: top-5 mean" if single else name)
        if single:
            score.plot(xs, _column(rows, "best"), color=color, linestyle="--", label="best so far")
        counts.plot(xs, _column(rows, "explored"), color=color, label="explored" if single else name)
        if single:
            for k, reason in enumerate(r for r in REASONS if any(_column(rows, f"rejected_{r}"))):
                counts.plot(xs, _column(rows, f"rejected_{reason}"), color=f"C{(k + 1) % 10}",
                            linewidth=1, label=f"rejected: {reason}")
        for column, style in (("reused", "--"), ("invalid", ":")):
            counts.plot(xs, _column(rows, column), color="black" if single else color, linestyle=style,
                        linewidth=1, label=column if single else None)
    score.set(xlabel=label, ylabel="score (search metric, val split)",
              title="mean score of the 5 best losses in the population")
    counts.set(xlabel=label, ylabel="losses (cumulative)", yscale="symlog",
               title="losses: explored, rejected (by reason), reused, invalid" if single
               else "explored (solid), reused (--), invalid (:)")
    score.grid(alpha=0.3)
    counts.grid(alpha=0.3)
    score.legend(fontsize=7)
    counts.legend(fontsize=7, ncol=2 if single else 1)
    if title:
        fig.suptitle(title)
    return fig


def save(fig, path: Path) -> None:
    """Write `fig` to `path` (PNG, PDF or SVG by its suffix), replacing it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def write_progress(run_dir: Path, rows: List[Dict[str, float]], title: str = "") -> Path:
    """progress.png of one run from its logbook rows."""
    path = Path(run_dir) / "progress.png"
    save(figure([(Path(run_dir).name, rows)], title=title), path)
    return path


def plot_runs(run_dirs: Sequence[str], out: str, x: str = "evaluations", title: str = "") -> Path:
    """One picture of several runs (`gp-losses plot`)."""
    runs = [(Path(d).name, read_logbook(Path(d))) for d in run_dirs]
    path = Path(out)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"-o {out!r}: give a .png, .pdf or .svg file")
    save(figure(runs, x, title), path)
    return path
