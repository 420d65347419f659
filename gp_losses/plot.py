"""Pictures of a search, drawn from its logbook.csv (matplotlib, headless).

Two panels, as the paper's Fig. 4 and what it leaves out: the mean score of the five best
losses in the population against proxy evaluations (or wall time), and the candidates
explored, rejected (by reason), reused and invalid, on a log scale. A search with several
objectives (search.objectives) gets a third: every trained loss on its first two objectives,
coloured by when it was trained, and the front of what had been trained after each quarter of
the evaluations (the whole front last); overlaid runs show their final fronts. A search
redraws `progress.png` in its run directory as it goes; `gp-losses plot RUN_DIR ... -o FILE`
overlays several runs (an ablation, seeds of one setting).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from gp_losses.core.errors import InputError
from gp_losses.outcomes import REASONS
from gp_losses.pareto import non_dominated, parse_objectives
from gp_losses.rundir import RunDir


class Front(NamedTuple):
    """A Pareto search's trained losses: objective names, weights, (evaluation, values) each."""

    names: Tuple[str, ...]
    weights: Tuple[float, ...]
    points: List[Tuple[int, Tuple[float, ...]]]

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


def figure(runs: Sequence[tuple], x: str = "evaluations", title: str = "",
           fronts: Optional[Sequence[Optional[Front]]] = None):
    """A two-panel Figure of `runs`, a list of (label, logbook rows); three panels when a run
    has a `Front` (`fronts`, one per run or None)."""
    from matplotlib.figure import Figure

    if x not in X_AXES:
        raise InputError(f"--x {x!r}: expected one of {', '.join(X_AXES)}")
    key, label = X_AXES[x]
    fronts = list(fronts or [None] * len(runs))
    pareto = any(f is not None and f.points for f in fronts)
    fig = Figure(figsize=(16 if pareto else 11, 4.2), layout="constrained")
    panels = fig.subplots(1, 3 if pareto else 2)
    score, counts = panels[0], panels[1]
    if pareto:
        draw_fronts(panels[2], runs, fronts)
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


def _front_line(ax, values: np.ndarray, weights: Sequence[float], **style) -> None:
    """The non-dominated points of `values` (first two objectives), joined as a staircase."""
    keep = values[non_dominated(values, weights)]
    keep = keep[np.argsort(keep[:, 0])]
    if weights[0] > 0 and weights[1] > 0:  # both maximized: the edge of the area they dominate
        ax.step(keep[:, 0], keep[:, 1], where="pre", marker="o", markersize=3, **style)
    else:
        ax.plot(keep[:, 0], keep[:, 1], marker="o", markersize=3, **style)


def draw_fronts(ax, runs: Sequence[tuple], fronts: Sequence[Optional[Front]]) -> None:
    """The front panel: one run's trained losses and its front by quarters of the
    evaluations, or several runs' final fronts."""
    shown = [(name, f) for (name, _), f in zip(runs, fronts) if f is not None and f.points]
    names, weights = shown[0][1].names[:2], shown[0][1].weights[:2]
    if len(shown) == 1:
        front = shown[0][1]
        evals = np.array([e for e, _ in front.points])
        values = np.array([v[:2] for _, v in front.points], dtype=float)
        dots = ax.scatter(values[:, 0], values[:, 1], c=evals, cmap="viridis", s=10, alpha=0.7)
        ax.figure.colorbar(dots, ax=ax, label="proxy evaluation")
        last = int(evals.max()) + 1
        for q, shade in zip((0.25, 0.5, 0.75, 1.0), ("0.75", "0.55", "0.35", "black")):
            upto = values[evals < max(1, round(q * last))]
            if len(upto):
                _front_line(ax, upto, weights, color=shade, linewidth=1.5 if q == 1 else 1,
                            label=f"front after {round(q * 100)}% of evaluations")
    else:
        for k, (name, front) in enumerate(shown):
            values = np.array([v[:2] for _, v in front.points], dtype=float)
            _front_line(ax, values, weights, color=f"C{k % 10}", label=name)
    arrows = ["" if w > 0 else " (lower is better)" for w in weights]
    ax.set(xlabel=f"{names[0]}{arrows[0]}", ylabel=f"{names[1]}{arrows[1]}",
           title="trained losses and the Pareto front" if len(shown) == 1 else "final Pareto fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def read_front(run_dir: Path) -> Optional[Front]:
    """A run's trained losses on its objectives (config.yaml's search.objectives, two or more;
    evaluations.jsonl's trained records), or None for a one-metric search."""
    from gp_losses import config as cfg

    config = cfg.read_yaml(Path(run_dir) / "config.yaml") if (Path(run_dir) / "config.yaml").is_file() else {}
    entries = tuple((config.get("search") or {}).get("objectives") or ())
    if len(entries) < 2:
        return None
    objectives = parse_objectives(entries, [str(e).partition(":")[0].strip() for e in entries])
    points: List[Tuple[int, Tuple[float, ...]]] = []
    path = Path(run_dir) / "evaluations.jsonl"
    if not path.is_file():
        return Front(tuple(o.metric for o in objectives), tuple(o.weight for o in objectives), points)
    with open(path) as fh:
        for line in fh:
            if '"eval"' not in line:  # rejected candidates and promotions: no training of their own
                continue
            record = json.loads(line)
            if record.get("status") == "ok" and all(o.metric in record["metrics"] for o in objectives):
                points.append((record["eval"], tuple(record["metrics"][o.metric] for o in objectives)))
    return Front(tuple(o.metric for o in objectives), tuple(o.weight for o in objectives), points)


def save(fig, path: Path) -> None:
    """Write `fig` to `path` (PNG, PDF or SVG by its suffix), replacing it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def write_progress(run_dir: Path, rows: List[Dict[str, float]], title: str = "",
                   front: Optional[Front] = None) -> Path:
    """progress.png of one run from its logbook rows (and a Pareto search's `front`)."""
    path = Path(run_dir) / "progress.png"
    save(figure([(Path(run_dir).name, rows)], title=title, fronts=[front]), path)
    return path


def plot_runs(run_dirs: Sequence[str], out: str, x: str = "evaluations", title: str = "") -> Path:
    """One picture of several runs (`gp-losses plot`); Pareto searches' final fronts overlaid."""
    runs = [(Path(d).name, read_logbook(Path(d))) for d in run_dirs]
    path = Path(out)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"-o {out!r}: give a .png, .pdf or .svg file")
    fronts = [read_front(Path(d)) for d in run_dirs]
    kinds = {(f.names[:2], f.weights[:2]) for f in fronts if f is not None}
    if len(kinds) > 1:
        raise InputError("these runs search different objectives (" + "; ".join(
            ", ".join(names) for names, _ in sorted(kinds)) + "): their fronts share no axes; plot them apart")
    save(figure(runs, x, title, fronts), path)
    return path
