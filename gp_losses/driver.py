"""Start or resume a search: config -> run directory -> Evolution.run(), with status.json.

status.json is the authority on how a run ended (`finished` or `failed` with the reason):
SCOOP's launcher exits 0 even when the script fails.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import signal
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from gp_losses import cluster
from gp_losses import config as cfg
from gp_losses.context import build_context, load_run_config
from gp_losses.core.errors import InputError, RunFailed, Stopped
from gp_losses.core.stopping import is_no_space, no_space, stop_on_signals
from gp_losses.evolution import Evolution, evaluation_seed, noise_seed
from gp_losses.fidelity import Promotion, promotion_seed, promotions
from gp_losses.final import choose_final
from gp_losses.jobs import close_sandbox, start_workers, train_job
from gp_losses.messages import TrainJob
from gp_losses.population import SearchState
from gp_losses.rundir import RunDir, atomic_write
from gp_losses.sandbox import hard_limit
from gp_losses.tracking import check_available
from gp_losses.workers import parallel_map

log = logging.getLogger("gp_losses")


def default_out(config: cfg.RunConfig, task_name: str, metric: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.name or f"{task_name}-{metric}"
    return Path("outputs") / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{stamp}"


def prepare(task: Optional[str], config_path: Optional[str], out: Optional[str],
            seed: Optional[int], evaluations: Optional[int], resume: Optional[str],
            overrides: Sequence[str], operators: Sequence[str] = ()) -> tuple:
    """(context, run dir (locked), state or None): every input checked before anything is
    written. A new run's config.yaml holds the batch size in effect (`search.batch` 0 is the
    number of workers now), so that a resume keeps it whatever the workers then."""
    if resume:
        if config_path or overrides or operators or seed is not None or out:
            raise InputError("--resume continues a run with its own config.yaml: "
                             "only --evaluations may be given with it")
        rundir = RunDir.open(Path(resume))
        try:
            config = cfg.load(rundir.path / "config.yaml",
                              [f"search.evaluations={evaluations}"] if evaluations else [])
            if task and task != config.task.name:
                raise InputError(f"--task {task!r} differs from the resumed run's task {config.task.name!r}")
            context = build_context(config)
            if config.search.tensorboard:
                check_available()
            state: Optional[SearchState] = rundir.load_checkpoint() if rundir.has_checkpoint() else None
        except BaseException:
            rundir.release()
            raise
        if state is None:
            log.info("%s has no checkpoint yet: the run starts over from its config.yaml", rundir.path)
        rundir.truncate_evaluations(state.jsonl_size if state else 0)
        if evaluations:
            atomic_write(rundir.path / "config.yaml", cfg.dump(config).encode())
        return context, rundir, state
    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={seed}")
    if evaluations is not None:
        extra.append(f"search.evaluations={evaluations}")
    config = load_run_config(task, config_path, extra, operators)
    if config.search.batch == 0:
        config = cfg.replace(config, search={"batch": cluster.size()})
    context = build_context(config)
    if config.search.tensorboard:  # the origin writes the events: checked here, not in workers
        check_available()
    path = Path(out) if out else default_out(config, context.task_cls.name or "task", context.metric)
    return context, RunDir.create(path, cfg.dump(config)), None


def run_search(task: Optional[str], config_path: Optional[str] = None, out: Optional[str] = None,
               seed: Optional[int] = None, evaluations: Optional[int] = None,
               resume: Optional[str] = None, overrides: Sequence[str] = (),
               operators: Sequence[str] = ()) -> Dict[str, Any]:
    with stop_on_signals():  # SIGINT, SIGTERM: status `interrupted`, sandboxes ended, exit 130/143
        context, rundir, state = prepare(task, config_path, out, seed, evaluations, resume, overrides,
                                         operators)
        try:
            return _search(context, rundir, state)
        finally:
            close_sandbox()
            rundir.release()


def _search(context, rundir: RunDir, state: Optional[SearchState]) -> Dict[str, Any]:
    workers = cluster.size()
    run_id = hashlib.sha1(str(rundir.path.resolve()).encode()).hexdigest()[:12]
    evolution = Evolution(context, rundir, workers, state, run_id)
    log.info("run %s: task %s, metric %s, %d evaluations, %d worker(s)%s, batch %d",
             rundir.path, context.task_cls.name, context.metric, context.config.search.evaluations,
             workers, " (SCOOP)" if cluster.running() else "", evolution.batch_size)
    rundir.write_status("running", evaluations=evolution.state.evaluations)
    for name in ("final.json", "final.md", "final.csv", "noise.json"):  # a resumed search may change the hall
        (rundir.path / name).unlink(missing_ok=True)
    cluster.route_log(str(rundir.path / "scoop.log"))
    try:
        log.info("setting up task %s in %d worker(s)", context.task_cls.name, workers)
        start_workers(evolution.spec)
        ended = evolution.run()
        hall = evolution.recorder.finish(ended)
        baselines = {}
        if context.config.search.compare_baselines and hall:
            baselines = compare_baselines(evolution, context, hall[0])
            rundir.write_json("baselines.json", baselines)
        noise = {}
        if context.config.search.noise_seeds and hall:
            noise = measure_noise(evolution, context, hall[0])
            rundir.write_json("noise.json", noise)
        final = choose_final(rundir.path, context) if context.config.final.top and hall else {}
    except BaseException as exc:
        evolution.recorder.close()
        resume = f"gp-losses search --resume {rundir.path}"
        if isinstance(exc, KeyboardInterrupt):
            stopped = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
            stopped.note = f"the run keeps what it did up to its last checkpoint; continue it with {resume}"
            rundir.write_status("interrupted", reason=str(stopped), evaluations=evolution.state.evaluations,
                                exit_code=stopped.exit_code, resume=resume)
            raise stopped from None
        if is_no_space(exc):
            error = no_space(exc, rundir.path, "the last checkpoint (checkpoint.pkl, written atomically) "
                             "is intact, so nothing before it is lost", f"continue with {resume}")
            try:
                rundir.write_status("failed", reason=str(error), evaluations=evolution.state.evaluations,
                                    exit_code=1)
            except OSError:
                pass  # no room for status.json either: the message says what happened
            raise error from None
        rundir.write_status("failed", reason=f"{type(exc).__name__}: {exc}", evaluations=evolution.state.evaluations,
                            exit_code=getattr(exc, "exit_code", 1))
        raise
    best = hall[(final.get("pick") or 1) - 1] if hall else None
    summary = {"run_dir": str(rundir.path), "status": "finished", "task": context.task_cls.name,
               "metric": context.metric, "evaluations": ended.evaluations, "explored": ended.explored,
               "reused": ended.counts["reused"], "best": best, "hall_of_fame": hall[:5],
               "baselines": baselines, "noise": noise, "final": final}
    rundir.write_status("finished", evaluations=ended.evaluations, explored=ended.explored,
                        best=best["score"] if best else None, pick=best["rank"] if best else None,
                        **cluster.status())
    report(summary)
    return summary


def compare_baselines(evolution: Evolution, context, best: Dict[str, Any]) -> Dict[str, Any]:
    """Each baseline of the task trained as the best loss's score was taken: with the seed of
    its evaluation, or at its fidelity rung with the seeds of its trainings there."""
    config, rung = context.config, best.get("rung", 0)
    names = list(context.task_cls.baselines)
    if not rung:
        seed = evaluation_seed(config.seed, best["eval"])
        jobs = [TrainJob(evolution.spec.key, context.task_cls.baselines[name], seed) for name in names]
        results = parallel_map(train_job, jobs, item_limit_s=hard_limit(config.proxy.timeout_s))
        return {name: {"score": r.score, "status": r.status, "metrics": dict(r.metrics), "seed": seed,
                       "expr": context.task_cls.baselines[name], "error": r.error}
                for name, r in zip(names, results)}
    seeds = [promotion_seed(config.seed, best["index"], rung, k) for k in range(config.fidelity.seeds)]
    jobs = [TrainJob(evolution.spec.key, context.task_cls.baselines[name], seed, rung)
            for name in names for seed in seeds]
    results = parallel_map(train_job, jobs, item_limit_s=hard_limit(config.fidelity.timeout_s))
    out = {}
    for i, name in enumerate(names):
        promotion = Promotion(rung, tuple(seeds), results[i * len(seeds):(i + 1) * len(seeds)])
        ok = promotion.status == "ok"
        out[name] = {"score": promotion.score, "status": promotion.status, "rung": rung, "seeds": seeds,
                     "metrics": {k: float(np.mean([r.metrics[k] for r in promotion.runs]))
                                 for k in promotion.runs[0].metrics} if ok else {},
                     "expr": context.task_cls.baselines[name],
                     "error": next((r.error for r in promotion.runs if r.error), None)}
    return out


def measure_noise(evolution: Evolution, context, best: Dict[str, Any]) -> Dict[str, Any]:
    """The proxy's noise: the hall's first trained with `search.noise_seeds` further seeds, at
    the fidelity rung of its score; the sample standard deviation of its scores there, its own
    included. A training that did not end `ok` is listed and left out of the spread (a failure
    is never a score)."""
    config, rung = context.config, best.get("rung", 0)
    seeds = [noise_seed(config.seed, i) for i in range(config.search.noise_seeds)]
    jobs = [TrainJob(evolution.spec.key, best["expr"], seed, rung) for seed in seeds]
    limit = config.fidelity.timeout_s if rung else config.proxy.timeout_s
    results = parallel_map(train_job, jobs, item_limit_s=hard_limit(limit))
    if rung:
        own = promotions(evolution.state.hof[0])[rung]
        runs = [{"seed": seed, "status": r.status, "score": r.score} for seed, r in zip(own.seeds, own.runs)]
    else:
        runs = [{"seed": evaluation_seed(config.seed, best["eval"]), "status": "ok", "score": best["score"]}]
    runs += [{"seed": seed, "status": r.status, "score": r.score, "error": r.error}
             for seed, r in zip(seeds, results)]
    scores = [run["score"] for run in runs if run["status"] == "ok"]
    std = float(np.std(scores, ddof=1)) if len(scores) > 1 else None
    return {"rank": 1, "expr": best["expr"], "metric": context.metric, "split": "val",
            **({"rung": rung} if rung else {}),
            "runs": runs, "ok": len(scores), "mean": float(np.mean(scores)), "std": std}


def within_noise(hall: List[Dict[str, Any]], noise: Dict[str, Any]) -> List[bool]:
    """Per hall entry, whether its score is within two noise standard deviations of the
    first's (at the first's fidelity rung: scores of other rungs are not comparable)."""
    std = noise.get("std") if noise else None
    if std is None or not hall:
        return [False] * len(hall)
    rung = hall[0].get("rung", 0)
    return [entry.get("rung", 0) == rung and hall[0]["score"] - entry["score"] <= 2 * std for entry in hall]


def report(summary: Dict[str, Any]) -> None:
    """The end of a search, for a person: hall of fame and baselines on stderr."""
    metric = summary["metric"]
    hall = summary["hall_of_fame"]
    others = [m for m in (hall[0].get("objectives", {}) if hall else {}) if m != metric]  # a Pareto front
    lines = [f"search finished: {summary['evaluations']} evaluations, {summary['explored']} losses "
             f"explored, {summary['reused']} reused; results in {summary['run_dir']}"
             + ("; the hall of fame is the Pareto front" if others else ""),
             f"{'rank':>4}  {metric:>8}  " + "".join(f"{m:>8}  " for m in others) + "formula"]
    noise = summary.get("noise") or {}
    for entry, tied in zip(hall, within_noise(hall, noise)):
        formula = "; ".join(f"{b}: {f}" for b, f in entry["formula"].items())
        notes = f"  (seeded: {entry['seeded']})" if "seeded" in entry else ""
        notes += f"  (rung {entry['rung']})" if "rung" in entry else ""
        mark = "~" if tied and entry["rank"] > 1 else " "
        values = "".join(f"{entry['objectives'][m]:8.4f}  " for m in others)
        lines.append(f"{entry['rank']:>4} {mark}{entry['score']:8.4f}  {values}{formula}{notes}")
    if noise:
        spread = f"std {noise['std']:.4f}" if noise["std"] is not None else "no spread (fewer than 2 ok)"
        where = f" at rung {noise['rung']}" if noise.get("rung") else ""
        lines.append(f"proxy noise: #1 over {len(noise['runs'])} seeds{where}, {noise['ok']} ok: mean "
                     f"{noise['mean']:.4f}, {spread}; ~ marks a score within 2 std of #1's (noise.json)")
    for name, base in summary["baselines"].items():
        score = f"{base['score']:8.4f}" if base["status"] == "ok" else f"{base['status']:>8}"
        how = (f"fidelity rung {base['rung']}, seeds {', '.join(map(str, base['seeds']))}" if base.get("rung")
               else f"same proxy, seed {base['seed']}")
        lines.append(f"base  {score}  {name}: {base['expr']} ({how})")
    final = summary["final"]
    if final:
        lines.append(f"finalists, {metric} on val with {json.dumps(final['options'])}, seeds "
                     f"{', '.join(map(str, final['seeds']))} (final.md):")
        for row in final["finalists"]:
            score = "failed" if row["mean"] is None or row["ok"] < row["seeds"] else f"{row['mean']:.4f}"
            mark = "  <- the search's pick" if row["rank"] == final["pick"] else ""
            lines.append(f"{row['rank']:>4}  {score:>8}{mark}")
        if final["pick"] is None:
            lines.append(f"      {final['note']}")
    log.info("\n".join(lines))


def search_args(name, config, out, resume, evaluations, sets, operators=()) -> tuple:
    """(run directory, `gp_losses/main.py` arguments) of a search, its inputs checked here and
    its run directory resolved (`--out`), so that whoever starts SCOOP reads the run's
    status afterwards."""
    args: List[str] = ["--task", name] if name else []
    if evaluations is not None:
        args += ["--evaluations", str(evaluations)]
    if resume:
        if config or sets or operators or out:
            raise InputError("--resume continues a run with its own config.yaml: "
                             "only --evaluations may be given with it")
        if not (Path(resume) / "config.yaml").is_file():
            raise InputError(f"--resume {str(resume)!r}: not a run directory (no config.yaml)")
        return str(resume), args + ["--resume", str(resume)]
    if config:
        args += ["--config", str(config)]
    for item in sets:
        args += ["--set", item]
    for item in operators:
        args += ["--operators", item]
    run_config = load_run_config(name, str(config) if config else None, sets, operators)  # bad input: now
    if out is None:
        context = build_context(run_config)
        out = default_out(run_config, context.task_cls.name or "task", context.metric)
    return str(out), args + ["--out", str(out)]


def status_time(run_dir: Union[str, Path]) -> Optional[int]:
    """When status.json was last written (None: not yet)."""
    path = Path(run_dir) / "status.json"
    return path.stat().st_mtime_ns if path.is_file() else None


def search_under_scoop(name, config, out, resume, evaluations, sets, operators, workers: Optional[int],
                       hostfile: Optional[str], quiet: bool = False, flags: Sequence[str] = (),
                       quiet_launcher: bool = False) -> str:
    """A search run by SCOOP, started from here (`gp-losses search --workers N`,
    `gp_losses.search(workers=N)`); its run directory once it finished, else RunFailed (or
    InputError where the search stopped at bad input) with status.json's reason."""
    if cluster.running():
        raise InputError("workers: SCOOP is started for you; under python -m scoop, give -n to scoop "
                         "instead of --workers")
    run_dir, args = search_args(name, config, out, resume, evaluations, sets, operators)
    before = status_time(run_dir)
    code = cluster.launch(list(args) + list(flags), workers, hostfile, quiet=quiet, quiet_launcher=quiet_launcher)
    check_finished(run_dir, code, before)
    return run_dir


def check_finished(run_dir: Union[str, Path], code: int, before: Optional[int] = None) -> None:
    """The result of a search that SCOOP ran: status.json says how it ended (SCOOP's own exit
    code does not); one not written since `before` means the run never started."""
    path = Path(run_dir)
    status = json.loads((path / "status.json").read_text()) if (path / "status.json").is_file() else {}
    if status_time(path) == before:
        status = {}
    if status.get("state") != "finished":
        reason = status.get("reason") or (f"the SCOOP launcher exited {code} before the run wrote its "
                                          "status (its messages are above)")
        exit_code = int(status.get("exit_code") or 1)
        error = (InputError if exit_code == 2 else RunFailed)(f"the search in {run_dir} failed: {reason}")
        error.exit_code = exit_code
        error.from_status = bool(status)
        raise error
