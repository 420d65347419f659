"""Single- against multi-fidelity search under one wall-time budget, judged on held-out data;
prints JSON.

For each variant and search seed: a search with `--workers` SCOOP workers, the same
`search.max_seconds` (the search loop's own time; the final stage comes after it, as the
task's run config has it), then the search's pick retrained from scratch on the test split
with `--retrain-seeds` seeds on the task's `long` schedule (retrain.options), and the task's
baselines once, with the same seeds and schedule (the same for every run). Per variant: the
pick's mean test score over search seeds and its spread (sample std, and min-max).

    single   the paper's search: every loss trained once on the proxy
    multi    + fidelity.rungs (--rung, task options of the rung above the proxy): the best
             third of the proxy's losses trained again at the rung (ASHA), the hall ranked by
             rung

A run directory that finished is reused and a retrain reruns only missing trainings, so the
script continues where it stopped when run again with the same `--out`.

    python bench/fidelity.py --task pose --seeds 1 2 3 --budget 420 --rung iterations=3000
    python bench/fidelity.py --task seg --seeds 1 2 3 --budget 480 --rung iterations=4000 \
        --set task.metric=bf1 --set task.options.iterations=1600 --set search.population_init=12 \
        --set proxy.timeout_s=600 --set final.top=0 --out outputs/fid-seg
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GP = [sys.executable, "-m", "gp_losses"]


def _run(args, log):
    with open(log, "a") as fh:
        done = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=fh, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} exited {done.returncode}; see {log}")
    return json.loads(done.stdout) if done.stdout.strip() else {}


def _status(run: Path) -> dict:
    path = run / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def search(task, variant, seed, args, out: Path) -> Path:
    run = out / f"{variant}-seed{seed}"
    if _status(run).get("state") == "finished":
        return run
    if run.exists():
        cmd = [*GP, "search", "--resume", str(run), "--workers", str(args.workers), "-q"]
    else:
        sets = [f"search.max_seconds={args.budget}", "search.evaluations=100000",
                "search.compare_baselines=false", *args.set]
        if variant == "multi":
            rung = ", ".join(f"{k}: {v}" for k, v in (item.split("=", 1) for item in args.rung))
            sets += [f"fidelity.rungs=[{{{rung}}}]", f"fidelity.promote={args.promote}"]
        cmd = [*GP, "search", "--task", task, "--seed", str(seed), "--out", str(run),
               "--workers", str(args.workers), "-q", *[a for s in sets for a in ("--set", s)]]
    _run(cmd, out / "bench.log")
    return run


def retrain(run: Path, seeds: int, baselines: str, workers: int, out: Path) -> dict:
    """The search's pick (final.json's, else rank 1) retrained on test, under SCOOP."""
    pick = json.loads((run / "final.json").read_text()).get("pick") if (run / "final.json").is_file() else None
    launch = [sys.executable, "-m", "scoop", "-n", str(workers), "--quiet", str(ROOT / "gp_losses" / "main.py")]
    return _run([*(launch if workers > 1 else GP), "retrain", str(run), "--ranks", str(pick or 1),
                 "--seeds", str(seeds), "--baselines", baselines, "-q"], out / "bench.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="pose")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--budget", type=float, default=420.0, help="search.max_seconds per search")
    parser.add_argument("--rung", nargs="+", default=["iterations=3000"], metavar="OPTION=VALUE")
    parser.add_argument("--promote", type=float, default=1 / 3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--baselines", default="", metavar="NAMES",
                        help="the task's baselines retrained once, comma-separated, or none (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides of every search")
    parser.add_argument("--out", default="outputs/bench-fidelity")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, baselines = [], None
    for seed in args.seeds:
        for variant in ("single", "multi"):
            run = search(args.task, variant, seed, args, out)
            summary = retrain(run, args.retrain_seeds, "none" if baselines is not None else args.baselines,
                              args.workers, out)
            found = [r for r in summary["rows"] if r["rank"]]
            if baselines is None:
                baselines = [r for r in summary["rows"] if not r["rank"]]
            metric = summary["metric"]
            state = _status(run)
            logbook = (run / "logbook.csv").read_text().splitlines()
            last = dict(zip(logbook[0].split(","), logbook[-1].split(",")))
            rows.append({"variant": variant, "search_seed": seed, "run": str(run),
                         "evaluations": state.get("evaluations"), "promoted": int(last.get("promoted", 0)),
                         "search_seconds": float(last["seconds_wall"]),
                         "pick": found[0]["name"] if found else None,
                         "test": found[0]["mean"][metric] if found else None,
                         "test_std_over_retrain_seeds": found[0]["std"][metric] if found else None})
            print(json.dumps(rows[-1]), file=sys.stderr)
    per_variant = {}
    for variant in ("single", "multi"):
        scores = [r["test"] for r in rows if r["variant"] == variant and r["test"] is not None]
        per_variant[variant] = {"searches": len(scores), "mean": statistics.mean(scores) if scores else None,
                                "std": statistics.stdev(scores) if len(scores) > 1 else None,
                                "min": min(scores, default=None), "max": max(scores, default=None)}
    print(json.dumps({"task": args.task, "cores": os.cpu_count(), "machine": platform.machine(),
                      "budget_s": args.budget, "workers": args.workers, "rung": args.rung,
                      "promote": args.promote, "split": "test", "schedule": "long",
                      "retrain_seeds": args.retrain_seeds, "metric": metric, "variants": per_variant,
                      "baselines": [{"name": b["name"], "mean": b["mean"][metric], "std": b["std"][metric]}
                                    for b in baselines or []],
                      "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
