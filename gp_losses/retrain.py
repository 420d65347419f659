"""`gp-losses retrain`: how good the found losses are on data the search never scored.

A search's hall-of-fame score is the best of many noisy proxy runs, each scored on the split
that selected it: optimistic by construction. Here the top K losses and every baseline of the
task are trained again from scratch, S seeds each, on the `long` schedule (`retrain.options`
over the search's task options; the paper retrains about 10x longer than its proxy) or the
search's own (`proxy`), and scored on the task's `test` split. The trainings are spread over
SCOOP workers as a search's are; each one is appended to `retrain/trainings.jsonl` when it
ends (gp_losses/journal.py), so a killed retrain rerun later trains only what is missing.

    retrain/trainings.jsonl   one line per training: loss, seed, split, options, result
    retrain/report.md         the comparison table (the paper's Table 2 layout), rediscovery,
    retrain/report.csv        proxy fidelity (Spearman, Kendall); the csv has one row per loss
                              (gp_losses/report.py)
"""

from __future__ import annotations

import hashlib
import logging
import signal
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from gp_losses import cluster
from gp_losses import config as cfg
from gp_losses.context import build_context, loss_exprs
from gp_losses.core.errors import InputError, Stopped
from gp_losses.core.stopping import is_no_space, no_space, stop_on_signals
from gp_losses.jobs import close_sandbox, protocol_job, share
from gp_losses.journal import Trainings, Wanted, locked, retrain_seed, train_missing, training_key
from gp_losses.messages import ProtocolJob, RunSpec
from gp_losses.recorder import formulas
from gp_losses.report import Entry, markdown, summarize, to_csv
from gp_losses.rundir import RunDir, search_pick
from gp_losses.sandbox import hard_limit
from gp_losses.tracking import check_available, write_retrain
from gp_losses.workers import parallel_map

log = logging.getLogger("gp_losses")
SCHEDULES = ("long", "proxy")


def load_entries(run: Path, context, top: int, ranks: Sequence[int] = ()) -> List[Entry]:
    """The top `top` hall-of-fame losses of the run and the search's pick (or those of
    `ranks`), then the task's baselines (those of `retrain.baselines`, or all), then the losses
    of `retrain.losses`."""
    hall = RunDir(run).hall_of_fame()
    if not hall:
        raise InputError(f"{str(run)!r} has no hall of fame yet: nothing to retrain (a search "
                         "writes hall_of_fame.json after its first scored batch)")
    proxies = RunDir(run).read_json("baselines.json", {})
    missing = sorted(set(ranks) - {h["rank"] for h in hall})
    if missing:
        raise InputError(f"--ranks: the hall of fame of {str(run)!r} has ranks 1 to {len(hall)}, "
                         f"not {', '.join(map(str, missing))}")
    picked = hall[:top] if not ranks else [h for h in hall if h["rank"] in ranks]
    pick = search_pick(run)
    if not ranks and pick > top:  # the search's pick among its finalists is always retrained
        picked.append(hall[pick - 1])
    entries = [Entry.found(h) for h in formulas(picked, context.space)]
    chosen = context.config.retrain.baselines or tuple(context.task_cls.baselines)  # ("none",): none
    for name, expr in context.task_cls.baselines.items():
        if name not in chosen:
            continue
        known = proxies.get(name, {})
        entries.append(Entry(name, dict(expr), 0, known.get("score") if known.get("status") == "ok" else None))
    return entries + given_losses(context, [e.name for e in entries])


def given_losses(context, taken: Sequence[str]) -> List[Entry]:
    """`retrain.losses` (a published loss, say) as entries of the comparison, each checked
    against the task's space before anything trains."""
    out = []
    for name, text in context.config.retrain.losses.items():
        where = f"retrain.losses.{name}"
        if str(name).startswith("#"):
            raise InputError(f"{where}: names starting with '#' are the hall of fame's ranks (#1, #2, ...); "
                             "give it another name")
        if name in taken:
            raise InputError(f"{where}: the name {name!r} is taken by a loss of the comparison "
                             f"({', '.join(taken)}); give it another name")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: expected a loss expression, got {text!r}")
        exprs = loss_exprs(context.task_cls, [part for part in text.split(";") if part.strip()], where)
        try:
            context.space.parse(exprs)
        except InputError as exc:
            raise InputError(f"{where}: {text!r}: {exc}") from None
        out.append(Entry(str(name), exprs, 0, given=True))
    return out


def fingerprints(context, spec: RunSpec, entries: List[Entry]) -> None:
    """Mark each found loss gradient-equivalent to the baselines it shares every branch's
    fingerprint with (paper section 3.2: the same gradient norms on the protocol's probe).
    Baselines written in Python have no fingerprint: the protocol checks trees."""
    space = context.space
    branches = [b.name for b in space.branches]
    trees = [entry for entry in entries
             if not any(space.python_loss(entry.expr[b], k) for k, b in enumerate(branches))]
    share(spec)
    jobs = [ProtocolJob(spec.key, k, entry.expr[b], False) for entry in trees for k, b in enumerate(branches)]
    results = parallel_map(protocol_job, jobs, item_limit_s=hard_limit(context.config.protocol.timeout_s))
    prints = {entry.name: None for entry in entries}
    for i, entry in enumerate(trees):
        own = results[i * len(branches):(i + 1) * len(branches)]
        prints[entry.name] = (tuple(tuple(r.fingerprint) for r in own)
                              if all(r.fingerprint for r in own) else None)
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
    if config.search.tensorboard:
        check_available()
    entries = load_entries(run, context, top, ranks)
    folder = run / "retrain"
    with stop_on_signals(), locked(folder):
        try:
            return compare(run, folder, context, train_config, entries, seeds, schedule, split,
                           folder / ("report" if split == default else f"report-{split}"))
        except KeyboardInterrupt as exc:
            stopped = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
            stopped.note = (f"the trainings done are kept in {folder / 'trainings.jsonl'}; the same "
                            "command trains only the rest")
            raise stopped from None
        except OSError as exc:
            if not is_no_space(exc):
                raise
            raise no_space(exc, folder, f"the trainings done are kept in {folder / 'trainings.jsonl'}",
                           "run the same command again: it trains only the rest") from None
        finally:
            close_sandbox()


def compare(run: Path, folder: Path, context, train_config, entries: List[Entry], seeds: int,
            schedule: str, split: str, report: Path) -> Dict[str, Any]:
    """Train what `entries` x `seeds` lacks in folder/trainings.jsonl; write `report`.md/.csv."""
    run_id = "retrain-" + hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:12]
    cluster.route_log(str(folder / "scoop.log"))
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
        fingerprints(context, RunSpec(cfg.to_dict(search_config), run_id), entries)
    spec = RunSpec(cfg.to_dict(train_config), run_id, split)
    options = dict(train_config.task.options)
    trainings = Trainings(folder / "trainings.jsonl")
    todo = [Wanted(training_key(entry.expr, retrain_seed(k), split, train_config), entry.name, entry.expr,
                   retrain_seed(k)) for entry in entries for k in range(seeds)]
    missing = sum(not trainings.done(w.key) for w in todo)
    log.info("retrain %s: %d losses x %d seeds on %s, schedule %s: %d trainings to run, %d done "
             "before; %d worker(s)", run, len(entries), seeds, split, schedule, missing,
             len(todo) - missing, cluster.size())
    train_missing(spec, todo, trainings)
    for entry, wanted in zip((e for e in entries for _ in range(seeds)), todo):
        entry.results.append(trainings.latest[wanted.key])  # a failure shows as failed, trained again next time
    summary = summarize(context, entries, seeds, schedule, split, options)
    report.with_suffix(".md").write_text(markdown(summary))
    report.with_suffix(".csv").write_text(to_csv(summary))
    summary["report"] = str(report.with_suffix(".md"))
    if train_config.search.tensorboard:
        write_retrain(run, summary)
    return summary
