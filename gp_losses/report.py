"""The comparison a retrain writes (retrain/report.md, .csv; a search's final.md, .csv): per
loss, the mean ± standard deviation of every metric over the seeds that trained, the failures,
which found loss is a baseline rediscovered, and how well the proxy's ranking predicted the
retrain's (Spearman, Kendall).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from gp_losses.journal import retrain_seed
from gp_losses.outcomes import Training
from gp_losses.pareto import non_dominated


@dataclass
class Entry:
    """One loss of the comparison: a found one (rank >= 1), a baseline or a given loss
    (`retrain.losses`; rank 0 both)."""

    name: str
    expr: Dict[str, str]
    rank: int = 0
    proxy: Optional[float] = None
    """The search's score of it (hall of fame; baselines.json for a baseline), val split."""
    formula: Dict[str, str] = field(default_factory=dict)
    equivalent: List[str] = field(default_factory=list)
    results: List[Training] = field(default_factory=list)
    """One training per seed (gp_losses/journal.py), failed ones included."""
    given: bool = False
    """A loss of `retrain.losses`, not one of the task's baselines."""

    @classmethod
    def found(cls, hall_entry: Dict[str, Any]) -> "Entry":
        """A hall-of-fame entry as a found loss of the comparison."""
        h = hall_entry
        proxy = h["rung_scores"]["0"] if "rung_scores" in h else h["score"]  # fidelity rungs: the proxy's
        return cls(f"#{h['rank']}", h["expr"], h["rank"], proxy, h.get("formula", {}))

    def ok(self) -> List[Training]:
        return [r for r in self.results if r.status == "ok"]


def _mean_std(values: List[float]) -> tuple:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def rank_correlation(proxy: List[float], final: List[float]) -> Dict[str, Any]:
    """Spearman's rho and Kendall's tau between proxy and retrain scores (scipy)."""
    from scipy import stats

    n = len(proxy)
    if n < 3 or len(set(proxy)) < 2 or len(set(final)) < 2:
        return {"n": n, "spearman": None, "kendall": None,
                "note": "needs at least 3 losses with both scores, not all tied"}
    rho, tau = stats.spearmanr(proxy, final).statistic, stats.kendalltau(proxy, final).statistic
    return {"n": n, "spearman": float(rho), "kendall": float(tau)}


def best_rows(rows: List[Dict[str, Any]], metric: str) -> List[str]:
    """Names of the rows to bold: the best mean of `metric`, unless another row's mean is
    within the seed spread (the two mean ± std intervals overlap), then none."""
    scored = [r for r in rows if r["mean"][metric] is not None]
    if not scored:
        return []
    best = max(scored, key=lambda r: r["mean"][metric])
    low = best["mean"][metric] - best["std"][metric]
    for r in scored:
        if r is not best and r["mean"][metric] + r["std"][metric] >= low:
            return []
    return [best["name"]]


def summarize(context, entries: List[Entry], seeds: int, schedule: str, split: str,
              options: Dict[str, Any]) -> Dict[str, Any]:
    metrics, target = list(context.task_cls.metrics), context.metric
    rows = []
    for e in entries:
        ok = e.ok()
        mean_std = {m: _mean_std([r.metrics[m] for r in ok]) for m in metrics}
        failed = [f"{r.status}: {r.error}" for r in e.results if r.status != "ok"]
        rows.append({"name": e.name, "rank": e.rank, "given": e.given, "expr": e.expr, "formula": e.formula,
                     "proxy": e.proxy, "equivalent": e.equivalent, "seeds": len(e.results),
                     "ok": len(ok), "failed": failed,
                     "mean": {m: v[0] for m, v in mean_std.items()},
                     "std": {m: v[1] for m, v in mean_std.items()},
                     "seconds": statistics.fmean(r.seconds for r in ok) if ok else None})
    pairs = [(r["proxy"], r["mean"][target]) for r in rows
             if r["proxy"] is not None and r["mean"][target] is not None]
    fidelity = rank_correlation([p for p, _ in pairs], [f for _, f in pairs])
    out = {"task": context.task_cls.name, "metric": target, "metrics": metrics, "split": split,
           "schedule": schedule, "seeds": [retrain_seed(k) for k in range(seeds)], "options": options,
           "rows": rows, "bold": best_rows(rows, target), "fidelity": fidelity}
    if context.pareto:
        mark_front(out, context.pareto)
    return out


def mark_front(summary: Dict[str, Any], objectives) -> None:
    """A Pareto search's comparison: each row's `non_dominated`, whether no other row's means
    are at least as good on every objective and better on one (rows with a failed objective
    are never on it)."""
    names = [o.metric for o in objectives]
    rows = [r for r in summary["rows"] if all(r["mean"][m] is not None for m in names)]
    keep = non_dominated(np.array([[r["mean"][m] for m in names] for r in rows]).reshape(-1, len(names)),
                         [o.weight for o in objectives]) if rows else []
    front = {r["name"] for r, k in zip(rows, keep) if k}
    for r in summary["rows"]:
        r["non_dominated"] = r["name"] in front
    summary["objectives"] = [f"{o.metric}:{'max' if o.weight > 0 else 'min'}" for o in objectives]


def _cell(row: Dict[str, Any], metric: str, digits: int = 4) -> str:
    mean, std = row["mean"][metric], row["std"][metric]
    return "failed" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _describe(row: Dict[str, Any]) -> str:
    shown = row["formula"] or row["expr"]
    text = "; ".join(f"{b}: {f}" for b, f in shown.items()) if len(shown) > 1 else next(iter(shown.values()))
    text = f"`{text}`"
    if row["equivalent"]:
        text += f" (equivalent to {', '.join(row['equivalent'])})"
    return text


def markdown(s: Dict[str, Any]) -> str:
    metric, metrics = s["metric"], s["metrics"]
    pareto = "objectives" in s
    starred = {o.partition(":")[0] for o in s.get("objectives", ())}
    title = ("The search's finalists" if s["schedule"] == "final" else "Retrain of the search's best losses")
    lines = [f"# {title}: task `{s['task']}`", "",
             f"Scored on the **{s['split']}** split"
             + (" (never seen by the search)." if s["split"] == "test" else
                " — the split the search selected its losses on, so the found losses' scores "
                "are optimistic (use them to choose among the found losses; score the chosen "
                "one on a split the search never saw, where the task has one)."),
             f"Schedule `{s['schedule']}`, seeds {', '.join(map(str, s['seeds']))}; mean ± standard "
             f"deviation over the seeds that trained. Target metric: **{metric}** (★). The best row is "
             "bold unless another row's mean ± std overlaps it. `proxy` is the search's score (val "
             "split, the best of its proxy runs)."
             + (f" Objectives {', '.join(s['objectives'])} (★ each): ◆ marks the rows no other row's "
                "means dominate (as good on every objective, better on one)." if pareto else ""), "",
             "| loss | " + " | ".join(f"{m} ★" if m == metric or m in starred else m for m in metrics)
             + " | proxy | ok / seeds | s / training |",
             "|---|" + "---|" * (len(metrics) + 3)]
    for row in s["rows"]:
        bold = row["name"] in s["bold"]
        name = (f"{row['name']} {_describe(row)}" if row["rank"] else
                f"{row['name']} {_describe(row)} (given)" if row.get("given") else f"{row['name']} (baseline)")
        cells = [_cell(row, m) for m in metrics]
        if bold:
            name, cells = f"**{name}**", [f"**{c}**" if m == metric else c for c, m in zip(cells, metrics)]
        if row.get("non_dominated"):
            name = f"◆ {name}"
        proxy = "—" if row["proxy"] is None else f"{row['proxy']:.4f}"
        seconds = "—" if row["seconds"] is None else f"{row['seconds']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {proxy} | {row['ok']} / {row['seeds']} | {seconds} |")
    f = s["fidelity"]
    lines += ["", "## Proxy fidelity", ""]
    if f["spearman"] is None:
        lines.append(f"Rank correlation not computed: {f['note']} ({f['n']} have).")
    else:
        lines.append(f"Between the search's proxy scores and the retrain's mean {metric} of the "
                     f"{f['n']} losses with both: Spearman ρ = {f['spearman']:.3f}, Kendall τ = "
                     f"{f['kendall']:.3f} (1: the proxy ranks the losses as the retrain does).")
    failures = [(row["name"], msg) for row in s["rows"] for msg in row["failed"]]
    if failures:
        lines += ["", "## Failed trainings", "",
                  "Left out of the means. An `error` or a `timeout` is trained again by the next "
                  "retrain; `invalid` (the network's outputs ended non-finite) is what the loss does.", ""]
        lines += [f"- {name}: {msg}" for name, msg in failures]
    lines += ["", "## Losses", ""]
    for row in s["rows"]:
        lines.append(f"- {row['name']}: " + "; ".join(f"{b}: `{e}`" for b, e in row["expr"].items()))
    lines += ["", f"Task options of the retrain: `{json.dumps(s['options'], sort_keys=True)}`", ""]
    return "\n".join(lines)


def to_csv(s: Dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    pareto = "objectives" in s
    writer.writerow(["loss", "rank", "expr", "formula", "equivalent_to", "proxy", "seeds", "ok"]
                    + [f"{m}_{k}" for m in s["metrics"] for k in ("mean", "std")]
                    + ["seconds_per_training", "target", "split", "schedule", "given"]
                    + (["objectives", "non_dominated"] if pareto else []))
    for row in s["rows"]:
        writer.writerow([row["name"], row["rank"], json.dumps(row["expr"]), json.dumps(row["formula"]),
                         " ".join(row["equivalent"]), row["proxy"], row["seeds"], row["ok"]]
                        + [row[k][m] for m in s["metrics"] for k in ("mean", "std")]
                        + [row["seconds"], s["metric"], s["split"], s["schedule"], row.get("given", False)]
                        + ([" ".join(s["objectives"]), row["non_dominated"]] if pareto else []))
    return out.getvalue()
