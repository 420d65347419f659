"""The search-efficiency ablation of the paper's Table 7 and Fig. 4, on this machine; prints JSON.

Four variants of the search, each given the same wall-time budget (`search.max_seconds`, the
search loop's own time: worker start-up and data loading are not counted) and the same seeds:

    1 naive       naive evolution: no loss rejection, no gradient-equivalence check, invalid
                  trainings run to the end
    2 +rejection  + the loss-rejection protocol (with its static checks)
    3 +equivalence + the gradient-equivalence check (a known fingerprint reuses its score)
    4 +stop       + stopping a training at its first non-finite loss (the default search)

For each run: losses explored and proxy evaluations per hour, the share of evaluations that
scored above chance (`--chance`: a score at or below it counts as chance), the best and the
top-5 mean score at 1/12, 1/3, 2/3 and all of the budget, the first time the top-5 mean
reaches `--target`, and the seconds of rejection jobs, of trainings (with one worker, their
wall time) and of the origin's own serial work. Runs are serial searches (one worker each),
`--parallel` of them at a time; every variant runs under the same conditions. Also writes
`ablation-<task>.png` (the runs of the first seed, score and counts against wall time) into
`--out`.

    python bench/ablation.py --task cls --seeds 0 1 2 --budget 120
    python bench/ablation.py --task pose --seeds 0 --budget 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gp_losses.plot import plot_runs, read_logbook  # noqa: E402

VARIANTS = {
    "1 naive": ["search.rejection=false", "search.equivalence=false", "search.stop_invalid=false"],
    "2 +rejection": ["search.rejection=true", "search.equivalence=false", "search.stop_invalid=false"],
    "3 +equivalence": ["search.rejection=true", "search.equivalence=true", "search.stop_invalid=false"],
    "4 +stop invalid": ["search.rejection=true", "search.equivalence=true", "search.stop_invalid=true"],
}
CHANCE = {"cls": 0.1, "pose": 0.0}
"""Score of a network that learned nothing: 1 in 10 digits; no keypoint found (AP 0)."""


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / f"{variant.split()[0]}-{variant.split()[1].lstrip('+').replace(' ', '_')}-seed{seed}"


def command(task: str, out: Path, seed: int, budget: float, extra) -> list:
    sets = ["search.evaluations=1000000", f"search.max_seconds={budget}", "search.compare_baselines=false",
            "search.batch=1", *extra]
    return [sys.executable, str(ROOT / "gp_losses" / "main.py"), "--task", task, "--out", str(out),
            "--seed", str(seed)] + [a for s in sets for a in ("--set", s)]


def summarize(path: Path, chance: float, budget: float, target: float) -> dict:
    rows = read_logbook(path)
    last = rows[-1]

    def at(seconds: float, key: str) -> float:
        before = [r[key] for r in rows if r["seconds_wall"] <= seconds]
        return round(before[-1], 4) if before else None

    reached = [r["seconds_wall"] for r in rows if r["top5"] >= target]
    with open(path / "evaluations.jsonl") as fh:
        records = [json.loads(line) for line in fh]
    trained = [r for r in records if r.get("eval") is not None and "status" in r]
    above = [r for r in trained if r["status"] == "ok" and r["score"] > chance]
    hours = last["seconds_wall"] / 3600
    return {
        "wall_s": round(last["seconds_wall"], 1), "explored": int(last["explored"]),
        "evaluations": int(last["evaluations"]), "reused": int(last["reused"]),
        "explored_per_hour": round(last["explored"] / hours), "evaluations_per_hour": round(last["evaluations"] / hours),
        "share_above_chance": round(len(above) / len(trained), 4) if trained else None,
        "invalid": int(last["invalid"]), "best": last["best"], "top5": last["top5"],
        "rejection_s": round(last["seconds_rejection_jobs"], 1),
        "training_s": round(last["seconds_training_jobs"], 1),
        "origin_s": round(last["seconds_origin"], 1),
        "best_top5_at": {f"{t:g}": (at(t, "best"), at(t, "top5")) for t in (budget / 12, budget / 3, 2 * budget / 3, budget)},
        "s_to_top5_target": round(reached[0], 1) if reached else None,
        "curve": [(round(r["seconds_wall"], 1), r["best"], r["top5"]) for r in rows[:: max(1, len(rows) // 20)]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cls")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=120.0, help="wall seconds per search")
    parser.add_argument("--parallel", type=int, default=os.cpu_count() or 1, help="searches at a time")
    parser.add_argument("--chance", type=float, help="score at or below which an evaluation is at chance")
    parser.add_argument("--target", type=float, default=0.95, help="top-5 mean whose first time is reported")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "ablation"))
    args = parser.parse_args()
    out = Path(args.out) / args.task
    chance = args.chance if args.chance is not None else CHANCE.get(args.task, 0.0)
    jobs = [(v, s) for s in args.seeds for v in VARIANTS]
    running, start = [], time.time()
    for variant, seed in jobs:
        path = run_dir(out, variant, seed)
        if (path / "status.json").is_file() and json.loads((path / "status.json").read_text())["state"] == "finished":
            continue  # a rerun keeps finished searches
        while len([p for p in running if p.poll() is None]) >= args.parallel:
            time.sleep(1)
        shutil.rmtree(path, ignore_errors=True)  # an unfinished one starts over: same budget for all
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.log", "w") as log:
            running.append(subprocess.Popen(command(args.task, path, seed, args.budget, VARIANTS[variant]),
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    for proc in running:
        proc.wait()
    results = {}
    for variant in VARIANTS:
        runs = [summarize(run_dir(out, variant, s), chance, args.budget, args.target) for s in args.seeds]
        keys = ("explored_per_hour", "evaluations_per_hour", "share_above_chance", "best", "top5",
                "rejection_s", "training_s", "origin_s")
        results[variant] = {"mean": {k: round(statistics.fmean(r[k] for r in runs), 4) for k in keys},
                            "runs": runs}
    first = [str(run_dir(out, v, args.seeds[0])) for v in VARIANTS]
    picture = plot_runs(first, str(Path(args.out) / f"ablation-{args.task}.png"), x="seconds",
                        title=f"{args.task}: search-efficiency ablation, seed {args.seeds[0]}, "
                              f"{args.budget:g} s each")
    ratio = results["4 +stop invalid"]["mean"]["explored_per_hour"] / results["1 naive"]["mean"]["explored_per_hour"]
    print(json.dumps({"benchmark": "ablation", "task": args.task, "cores": os.cpu_count(),
                      "python": platform.python_version(), "budget_s": args.budget, "seeds": args.seeds,
                      "parallel": args.parallel, "chance": chance, "variants": results,
                      "explored_per_hour_4_over_1": round(ratio, 2), "picture": str(picture),
                      "total_s": round(time.time() - start)}, indent=1))


if __name__ == "__main__":
    main()
