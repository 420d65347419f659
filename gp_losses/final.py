"""The search's final stage (`final.top` > 0): its pick among the top K of the hall of fame.

Not in the paper, which takes the hall's first: that score is the best of many short noisy
runs, so the near-tied top losses are ordered partly by chance, and a short proxy can rank a
loss that falls behind with longer training above one that does not (docs/engine.md). The
finalists are trained again, longer, on the val split; the test split stays unseen.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

from gp_losses import config as cfg
from gp_losses.journal import locked
from gp_losses.report import Entry
from gp_losses.retrain import compare
from gp_losses.rundir import RunDir, atomic_write

log = logging.getLogger("gp_losses")


def choose_final(run: Path, context) -> Dict[str, Any]:
    """The search's pick (`final.top` > 0): the top K hall-of-fame losses trained again on the
    val split with `final.options`, `final.seeds` seeds each; the highest mean of the target
    metric wins, the better hall rank on a tie (a Pareto search's: its first objective; the
    finalists the others dominate are marked, and `export --rank` takes any of them). A
    finalist with a failed training (error, timeout, invalid) is not eligible. Writes
    final.json and final.md/.csv in the run directory; the trainings join
    retrain/trainings.jsonl, so a rerun trains only what is missing. Without an eligible
    finalist the hall's first stays the pick, and final.json says why."""
    final = context.config.final
    options = cfg.merge(dict(context.config.task.options), final.options)
    train_config = cfg.replace(context.config, task={"options": options},
                               proxy={"timeout_s": final.timeout_s})
    hall = RunDir(run).hall_of_fame()
    entries = [Entry.found(h) for h in hall[:final.top]]
    folder = run / "retrain"
    with locked(folder):
        summary = compare(run, folder, context, train_config, entries, final.seeds, "final", "val",
                          run / "final")
    target = summary["metric"]
    eligible = [r for r in summary["rows"] if r["ok"] == r["seeds"] and r["mean"][target] is not None]
    best = max(eligible, key=lambda r: (r["mean"][target], -r["rank"]), default=None)
    result = {"pick": best["rank"] if best else None, "metric": target, "split": "val",
              "seeds": summary["seeds"], "options": dict(final.options),
              "finalists": [{"rank": r["rank"], "proxy": r["proxy"], "mean": r["mean"][target],
                             "std": r["std"][target], "ok": r["ok"], "seeds": r["seeds"],
                             "failed": r["failed"], **_objectives(r, context)}
                            for r in summary["rows"]]}
    if context.pareto:
        result["objectives"] = summary["objectives"]
    if best is None:
        result["note"] = "no finalist trained on every seed: the hall's first is the pick"
        log.warning("final: %s (final.md lists the failures)", result["note"])
    atomic_write(run / "final.json", (json.dumps(result, indent=2) + "\n").encode())
    return result


def _objectives(row: Dict[str, Any], context) -> Dict[str, Any]:
    """A Pareto search's finalist: its mean per objective, and whether no other finalist's
    means dominate it."""
    if not context.pareto:
        return {}
    return {"means": {o.metric: row["mean"][o.metric] for o in context.pareto},
            "non_dominated": row["non_dominated"]}
