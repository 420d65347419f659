"""How a search's speed grows with SCOOP workers, phase by phase; prints JSON.

Runs the same search (same seed, same `search.batch`; no final stage: `final.top=0`) serially
and under `python -m scoop -n W` for each W of `--workers`, one after the other, and reports
for each: the whole process's wall seconds (launch to exit), and from logbook.csv the search
loop, the rejection work and the proxy trainings (the worker-seconds their jobs held, divided
by the W workers: their share of the search's wall time, as the phases overlap), the workers'
idle time (also per worker) and the origin's own serial work (`seconds_origin`: selection,
taking answers, dedupe, aging, records, checkpoint), each with its speed-up over the serial
run. It checks that every run wrote the same evaluations.jsonl and hall of fame (timings,
worker ids and devices aside).

Projection to more workers (`--project`), with `search.batch` = W as a default run has:

    batch wall(W) = W * o + r + round_s + E[max of W trainings]
    speed-up(W)   = W * (o1 + r + t) / batch wall(W)        efficiency = speed-up / W

o: the origin's serial seconds per evaluation in the largest measured SCOOP run; o1: the same
in the serial run; r: rejection worker-seconds per evaluation in the serial run (a batch's
rejection work, shared by its W workers, plus one job's time box while the last workers finish
theirs); t: the mean proxy training; E[max of W trainings]: the mean, over 2,000 draws, of the
longest of W trainings drawn from the serial run's (the batch's trainings start together once
its last slot is known). The model leaves out what the workers gain — the next batch's random
candidates checked while trainings finish — and what they lose to the network and SCOOP's
broker; it is also evaluated at the measured W, to compare with the measurement.

    python bench/scaling.py                   # pose, 8 evaluations, batch 2: serial, -n 1, -n 2
    python bench/scaling.py --task cls --evaluations 20 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
UNSTABLE = {"seconds", "worker", "device"}
"""Record fields that legitimately differ between runs of one search."""
PHASES = {"search": "seconds_wall", "rejection": "seconds_rejection_jobs",
          "training": "seconds_training_jobs", "idle": "seconds_idle", "origin": "seconds_origin"}
PER_WORKER = {"rejection", "training", "idle"}
"""Phases logged in worker-seconds: divided by the number of workers."""


def launch(workers: Optional[int], task: str, out: Path, args: argparse.Namespace) -> float:
    """Run one search; the process's wall seconds."""
    prefix = [sys.executable] + (["-m", "scoop", "-n", str(workers)] if workers else [])
    sets = [f"search.batch={args.batch}", "search.compare_baselines=false", "search.plot=false", "final.top=0",
            *args.set]  # the search alone: no baselines, no picture, no final stage (a run config's final.top)
    cmd = prefix + [str(ROOT / "gp_losses" / "main.py"), "--task", task, "--seed", str(args.seed),
                    "--evaluations", str(args.evaluations), "--out", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    state = json.loads((out / "status.json").read_text()).get("state") if (out / "status.json").exists() else None
    if done.returncode != 0 or state != "finished":  # SCOOP's launcher exits 0 whatever happened
        sys.exit(f"the run in {out} did not finish (exit {done.returncode}, state {state}):\n"
                 f"{done.stderr[-3000:]}")
    return seconds


def records(out: Path) -> List[Dict[str, Any]]:
    with open(out / "evaluations.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stable(out: Path) -> Any:
    return ([{k: v for k, v in r.items() if k not in UNSTABLE} for r in records(out)],
            json.loads((out / "hall_of_fame.json").read_text()))


def last_row(out: Path) -> Dict[str, float]:
    with open(out / "logbook.csv") as fh:
        row = list(csv.DictReader(fh))[-1]
    return {k: float(v) for k, v in row.items() if k.startswith("seconds_") or k == "evaluations"}


def measure(name: str, workers: Optional[int], args: argparse.Namespace) -> Dict[str, Any]:
    out = Path(args.out) / name
    if out.exists():
        sys.exit(f"{out} exists: give another --out, or remove it")
    process = launch(workers, args.task, out, args)
    row = last_row(out)
    width = workers or 1
    entry = {"workers": width, "scoop": bool(workers), "process": round(process, 2),
             **{phase: round(row[key] / (width if phase in PER_WORKER else 1), 2) for phase, key in PHASES.items()},
             "rejection_sandbox": round(row["seconds_rejection_sandbox"], 2),
             "speculative": round(row["seconds_speculative"], 2),
             "ahead": round(row["seconds_ahead"], 2),
             "training_sandbox": round(row["seconds_training_sandbox"], 2),
             "evaluations": int(row["evaluations"])}
    entry["origin_share"] = round(entry["origin"] / entry["search"], 4)
    return entry


def projection(serial: Dict[str, Any], widest: Dict[str, Any], trainings: List[float],
               round_s: float, workers: int, draws: int = 2000) -> Dict[str, float]:
    n = serial["evaluations"]
    o1, o = serial["origin"] / n, widest["origin"] / widest["evaluations"]
    r, t = serial["rejection_sandbox"] / n, statistics.fmean(trainings)
    rng = random.Random(0)
    longest = statistics.fmean(max(rng.choices(trainings, k=workers)) for _ in range(draws))
    batch = workers * o + r + round_s + longest
    speedup = workers * (o1 + r + t) / batch
    return {"workers": workers, "batch_wall": round(batch, 2), "speedup": round(speedup, 2),
            "efficiency": round(speedup / workers, 3), "origin_share": round(workers * o / batch, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="pose")
    parser.add_argument("--evaluations", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="search.batch of every run (fixes the result)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, max(2, os.cpu_count() or 1)],
                        help="SCOOP worker counts to measure (besides the serial run)")
    parser.add_argument("--project", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--round-s", type=float, default=0.5, help="search.round_s of the runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "outputs" / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = parser.parse_args()
    args.set = [f"search.round_s={args.round_s}", *args.set]
    Path(args.out).mkdir(parents=True, exist_ok=True)

    runs = {"serial": measure("serial", None, args)}
    for w in args.workers:
        runs[f"scoop_{w}"] = measure(f"scoop_{w}", w, args)
    serial = runs["serial"]
    reference = stable(Path(args.out) / "serial")
    for name, entry in runs.items():
        entry["identical_to_serial"] = stable(Path(args.out) / name) == reference
        entry["speedup"] = {phase: round(serial[phase] / entry[phase], 3) if entry[phase] else None
                            for phase in ("process", *PHASES) if phase != "idle"}
    trainings = [r["seconds"] for r in records(Path(args.out) / "serial") if "eval" in r]
    widest = max((e for e in runs.values() if e["scoop"]), key=lambda e: e["workers"])
    model = {w: projection(serial, widest, trainings, args.round_s, w)
             for w in sorted({e["workers"] for e in runs.values() if e["scoop"]} | set(args.project))}
    print(json.dumps({
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "task": args.task, "evaluations": args.evaluations, "batch": args.batch, "seed": args.seed,
        "extra": args.set, "runs": runs,
        "model": "batch wall(W) = W*o + r + round_s + E[max of W trainings]; "
                 "speed-up(W) = W*(o1 + r + t) / batch wall(W) (bench/scaling.py docstring)",
        "projection": model}, indent=2))


if __name__ == "__main__":
    main()
