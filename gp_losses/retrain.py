"""`gp-losses retrain`: how good the found losses are on data the search never scored.

A search's hall-of-fame score is the best of many noisy proxy runs, each scored on the split
that selected it: optimistic by construction. Here the top K losses and every baseline of the
task are trained again from scratch, S seeds each, on the `long` schedule (`retrain.options`
over the search's task options; the paper retrains about 10x longer than its proxy) or the
search's own (`proxy`), and scored on the task's `test` split. The trainings are spread over
SCOOP workers as a search's are; each one is appended to `retrain/trainings.jsonl` when it
ends, so a killed retrain rerun later trains only what is missing. A failed training (error,
timeout) is recorded and trained again next time; it never counts as a result.

    retrain/trainings.jsonl   one line per training: loss, seed, split, options, result
    retrain/report.md         the comparison table (the paper's Table 2 layout), rediscovery,
    retrain/report.csv        proxy fidelity (Spearman, Kendall); the csv has one row per loss
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tqdm import tqdm

from gp_losses import config as cfg
from gp_losses.context import build_context
from gp_losses.core.errors import InputError
from gp_losses.outcomes import reusable
from gp_losses.parallel import (parallel_map, protocol_job, route_scoop_log, start_workers, train_job,
                                worker_count)
from gp_losses.rundir import RunDir, atomic_write, search_pick
from gp_losses.sandbox import close_all, hard_limit

log = logging.getLogger("gp_losses")
SCHEDULES = ("long", "proxy")


@dataclass
class Entry:
    """One loss of the comparison: a found one (rank >= 1) or a baseline (rank 0)."""

    name: str
    expr: Dict[str, str]
    rank: int = 0
    proxy: Optional[float] = None
    """The search's score of it (hall of fame; baselines.json for a baseline), val split."""
    formula: Dict[str, str] = field(default_factory=dict)
    equivalent: List[str] = field(default_factory=list)
    results: List[Dict[str, Any]] = field(default_factory=list)

    @classmethod
    def found(cls, hall_entry: Dict[str, Any]) -> "Entry":
        """A hall-of-fame entry as a found loss of the comparison."""
        h = hall_entry
        return cls(f"#{h['rank']}", h["expr"], h["rank"], h["score"], h.get("formula", {}))

    def ok(self) -> List[Dict[str, Any]]:
        return [r for r in self.results if r["status"] == "ok"]


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
        self.latest: Dict[str, Dict[str, Any]] = {}
        text = path.read_text() if path.is_file() else ""
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
            with open(path, "r+") as fh:
                fh.truncate(len(text.encode()))
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                self.latest[record["key"]] = record["result"]

    def done(self, key: str) -> bool:
        """Whether the training has a result to keep: ok or invalid are facts about the loss;
        an error or a timeout is trained again."""
        return key in self.latest and reusable(self.latest[key])

    def append(self, key: str, loss: str, seed: int, result: Dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"key": key, "loss": loss, "seed": seed, "result": result}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.latest[key] = result


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{str(folder)!r} is in use by another retrain; wait for it to end") from None
        yield


def load_entries(run: Path, context, top: int, ranks: Sequence[int] = ()) -> List[Entry]:
    """The top `top` hall-of-fame losses of the run and the search's pick (or those of
    `ranks`), then the task's baselines (those of `retrain.baselines`, or all)."""
    hall_path = run / "hall_of_fame.json"
    hall = json.loads(hall_path.read_text()) if hall_path.is_file() else []
    if not hall:
        raise InputError(f"{str(run)!r} has no hall of fame yet: nothing to retrain (a search "
                         "writes hall_of_fame.json after its first scored batch)")
    base_path = run / "baselines.json"
    proxies = json.loads(base_path.read_text()) if base_path.is_file() else {}
    missing = sorted(set(ranks) - {h["rank"] for h in hall})
    if missing:
        raise InputError(f"--ranks: the hall of fame of {str(run)!r} has ranks 1 to {len(hall)}, "
                         f"not {', '.join(map(str, missing))}")
    picked = hall[:top] if not ranks else [h for h in hall if h["rank"] in ranks]
    pick = search_pick(run)
    if not ranks and pick > top:  # the search's pick among its finalists is always retrained
        picked.append(hall[pick - 1])
    entries = [Entry.found(h) for h in picked]
    chosen = context.config.retrain.baselines or tuple(context.task_cls.baselines)
    for name, expr in context.task_cls.baselines.items():
        if name not in chosen:
            continue
        known = proxies.get(name, {})
        entries.append(Entry(name, dict(expr), 0, known.get("score") if known.get("status") == "ok" else None))
    return entries


def fingerprints(context, spec: Dict[str, Any], entries: List[Entry]) -> None:
    """Mark each found loss gradient-equivalent to the baselines it shares every branch's
    fingerprint with (paper section 3.2: the same gradient norms on the protocol's probe).
    Baselines written in Python have no fingerprint: the protocol checks trees."""
    space = context.space
    branches = [b.name for b in space.branches]
    trees = [entry for entry in entries
             if not any(space.python_loss(entry.expr[b], k) for k, b in enumerate(branches))]
    jobs = [(spec, k, entry.expr[b], False) for entry in trees for k, b in enumerate(branches)]
    results = parallel_map(protocol_job, jobs, item_limit_s=hard_limit(context.config.protocol.timeout_s))
    prints = {entry.name: None for entry in entries}
    for i, entry in enumerate(trees):
        own = results[i * len(branches):(i + 1) * len(branches)]
        prints[entry.name] = (tuple(tuple(r["fingerprint"]) for r in own)
                              if all(r["fingerprint"] for r in own) else None)
    for entry in entries:
        if entry.rank and prints[entry.name]:
            entry.equivalent = [e.name for e in entries if not e.rank and prints[e.name] == prints[entry.name]]


def retrain(run_dir: str, top: Optional[int] = None, seeds: Optional[int] = None,
            schedule: str = "long", overrides: Sequence[str] = (),
            split: Optional[str] = None, ranks: Sequence[int] = ()) -> Dict[str, Any]:
    """Retrain a run's best losses and its task's baselines; write the report; its summary.

    `split` defaults to the task's `test` split (`val` where it has none), reported in
    retrain/report.md; another split is reported in retrain/report-<split>.md. Scoring `val`
    at the long schedule chooses among the found losses without touching `test`: retrain the
    top K on val, then only the chosen one (`ranks`) and the baselines on test."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise InputError(f"{run_dir!r} is not a run directory (no config.yaml)")
    if schedule not in SCHEDULES:
        raise InputError(f"--schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    state = RunDir(run).owned_status().get("state")
    if state == "running":
        raise InputError(f"the search in {run_dir!r} is still running; retrain it when it has ended")
    config = cfg.load(run / "config.yaml", overrides)
    context = build_context(config)
    top, seeds = top or config.retrain.top, seeds or config.retrain.seeds
    options = dict(config.task.options)
    if schedule == "long":
        if not config.retrain.options:
            raise InputError("--schedule long: the run's config has no retrain.options (the task "
                             "options of the long schedule); give them, e.g. --set "
                             "retrain.options.iterations=N, or use --schedule proxy")
        options = cfg.merge(options, config.retrain.options)
    task_cls = context.task_cls
    default = "test" if "test" in task_cls.splits else "val"
    split = split or default
    scored = [name for name in task_cls.splits if name != "train"]
    if split not in scored:
        raise InputError(f"--split {split!r}: task {task_cls.name} scores the splits "
                         f"{', '.join(scored)} (train trains the network)")
    train_config = cfg.replace(config, task={"options": options},
                               proxy={"timeout_s": config.retrain.timeout_s})
    build_context(train_config)
    entries = load_entries(run, context, top, ranks)
    folder = run / "retrain"
    with _locked(folder):
        try:
            return _retrain(run, folder, context, train_config, entries, seeds, schedule, split,
                            folder / ("report" if split == default else f"report-{split}"))
        finally:
            close_all()


def _retrain(run: Path, folder: Path, context, train_config, entries: List[Entry], seeds: int,
             schedule: str, split: str, report: Path) -> Dict[str, Any]:
    """Train what `entries` x `seeds` lacks in folder/trainings.jsonl; write `report`.md/.csv."""
    run_id = "retrain-" + hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:12]
    route_scoop_log(str(folder / "scoop.log"))
    if split == "val" and "test" not in context.task_cls.splits:
        log.warning("task %s has no test split: the retrain scores val, the split the search "
                    "selected its losses on, so the found losses' scores are optimistic",
                    context.task_cls.name)
    elif schedule == "final":
        log.info("the search's finalists: the top %d trained again on %s; the best is the pick",
                 len(entries), split)
    elif split != "test":
        log.info("scoring the %s split: for choosing among the found losses; score the chosen "
                 "one on test (--ranks R)", split)
    if any(not entry.rank for entry in entries):  # which found losses are a baseline rediscovered
        search_config = cfg.replace(context.config, search={"equivalence": True})
        fingerprints(context, {"config": cfg.to_dict(search_config), "run_id": run_id}, entries)
    spec = {"config": cfg.to_dict(train_config), "run_id": run_id, "split": split}
    options = dict(train_config.task.options)
    trainings = Trainings(folder / "trainings.jsonl")
    todo = []
    for entry in entries:
        for k in range(seeds):
            key = training_key(entry.expr, retrain_seed(k), split, train_config)
            todo.append((key, entry, retrain_seed(k)))
    missing = [job for job in todo if not trainings.done(job[0])]
    log.info("retrain %s: %d losses x %d seeds on %s, schedule %s: %d trainings to run, %d done "
             "before; %d worker(s)", run, len(entries), seeds, split, schedule, len(missing),
             len(todo) - len(missing), worker_count())
    if missing:
        start_workers(spec)
        width = worker_count()
        with tqdm(total=len(missing), desc="trainings", unit="run", dynamic_ncols=True) as bar:
            for at in range(0, len(missing), width):
                chunk = missing[at:at + width]
                results = parallel_map(train_job, [(spec, entry.expr, seed) for _, entry, seed in chunk],
                                       item_limit_s=hard_limit(spec["config"]["proxy"]["timeout_s"]))
                for (key, entry, seed), result in zip(chunk, results):
                    trainings.append(key, entry.name, seed, result)
                bar.update(len(chunk))
    for key, entry, seed in todo:  # a failure is shown as failed and trained again next time
        entry.results.append({**trainings.latest[key], "seed": seed})
    summary = summarize(context, entries, seeds, schedule, split, options)
    report.with_suffix(".md").write_text(markdown(summary))
    report.with_suffix(".csv").write_text(to_csv(summary))
    summary["report"] = str(report.with_suffix(".md"))
    return summary


def choose_final(run: Path, context) -> Dict[str, Any]:
    """The search's pick (`final.top` > 0): the top K hall-of-fame losses trained again on the
    val split with `final.options`, `final.seeds` seeds each; the highest mean of the target
    metric wins, the better hall rank on a tie. A finalist with a failed training (error,
    timeout, invalid) is not eligible. Writes final.json and final.md/.csv in the run
    directory; the trainings join retrain/trainings.jsonl, so a rerun trains only what is
    missing. Without an eligible finalist the hall's first stays the pick, and final.json
    says why."""
    final = context.config.final
    options = cfg.merge(dict(context.config.task.options), final.options)
    train_config = cfg.replace(context.config, task={"options": options},
                               proxy={"timeout_s": final.timeout_s})
    hall = json.loads((run / "hall_of_fame.json").read_text())
    entries = [Entry.found(h) for h in hall[:final.top]]
    folder = run / "retrain"
    with _locked(folder):
        summary = _retrain(run, folder, context, train_config, entries, final.seeds, "final", "val",
                           run / "final")
    target = summary["metric"]
    eligible = [r for r in summary["rows"] if r["ok"] == r["seeds"] and r["mean"][target] is not None]
    best = max(eligible, key=lambda r: (r["mean"][target], -r["rank"]), default=None)
    result = {"pick": best["rank"] if best else None, "metric": target, "split": "val",
              "seeds": summary["seeds"], "options": dict(final.options),
              "finalists": [{"rank": r["rank"], "proxy": r["proxy"], "mean": r["mean"][target],
                             "std": r["std"][target], "ok": r["ok"], "seeds": r["seeds"],
                             "failed": r["failed"]}
                            for r in summary["rows"]]}
    if best is None:
        result["note"] = "no finalist trained on every seed: the hall's first is the pick"
        log.warning("final: %s (final.md lists the failures)", result["note"])
    atomic_write(run / "final.json", (json.dumps(result, indent=2) + "\n").encode())
    return result


# --- the report -------------------------------------------------------------------------
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
        mean_std = {m: _mean_std([r["metrics"][m] for r in ok]) for m in metrics}
        failed = [f"{r['status']}: {r['error']}" for r in e.results if r["status"] != "ok"]
        rows.append({"name": e.name, "rank": e.rank, "expr": e.expr, "formula": e.formula,
                     "proxy": e.proxy, "equivalent": e.equivalent, "seeds": len(e.results),
                     "ok": len(ok), "failed": failed,
                     "mean": {m: v[0] for m, v in mean_std.items()},
                     "std": {m: v[1] for m, v in mean_std.items()},
                     "seconds": statistics.fmean(r["seconds"] for r in ok) if ok else None})
    pairs = [(r["proxy"], r["mean"][target]) for r in rows
             if r["proxy"] is not None and r["mean"][target] is not None]
    fidelity = rank_correlation([p for p, _ in pairs], [f for _, f in pairs])
    return {"task": context.task_cls.name, "metric": target, "metrics": metrics, "split": split,
            "schedule": schedule, "seeds": [retrain_seed(k) for k in range(seeds)], "options": options,
            "rows": rows, "bold": best_rows(rows, target), "fidelity": fidelity}


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
             "split, the best of its proxy runs).", "",
             "| loss | " + " | ".join(f"{m} ★" if m == metric else m for m in metrics)
             + " | proxy | ok / seeds | s / training |",
             "|---|" + "---|" * (len(metrics) + 3)]
    for row in s["rows"]:
        bold = row["name"] in s["bold"]
        name = f"{row['name']} {_describe(row)}" if row["rank"] else f"{row['name']} (baseline)"
        cells = [_cell(row, m) for m in metrics]
        if bold:
            name, cells = f"**{name}**", [f"**{c}**" if m == metric else c for c, m in zip(cells, metrics)]
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
    writer.writerow(["loss", "rank", "expr", "formula", "equivalent_to", "proxy", "seeds", "ok"]
                    + [f"{m}_{k}" for m in s["metrics"] for k in ("mean", "std")]
                    + ["seconds_per_training", "target", "split", "schedule"])
    for row in s["rows"]:
        writer.writerow([row["name"], row["rank"], json.dumps(row["expr"]), json.dumps(row["formula"]),
                         " ".join(row["equivalent"]), row["proxy"], row["seeds"], row["ok"]]
                        + [row[k][m] for m in s["metrics"] for k in ("mean", "std")]
                        + [row["seconds"], s["metric"], s["split"], s["schedule"]])
    return out.getvalue()
