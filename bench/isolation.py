"""What running a worker's jobs in a child process costs (`proxy.isolate`); prints JSON.

The same protocol jobs (random losses past the static checks) and proxy trainings are run in
this process (`proxy.isolate: false`) and through a sandbox child (the default), one after the
other, with the task's default configuration; it reports the start-up (imports and task
setup in the child) and the seconds per job of each kind, and the start-up of a second
sandbox in the same process (forked from the process's sandbox starter, on Linux) against
that of a fresh interpreter.

    python bench/isolation.py [--task cls] [--protocol-jobs 200] [--train-jobs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gp_losses.config import to_dict  # noqa: E402
from gp_losses.context import build_context, load_run_config  # noqa: E402
from gp_losses.rejection import static_reason  # noqa: E402
from gp_losses.messages import ProtocolJob, RunSpec, TrainJob  # noqa: E402
from gp_losses import sandbox  # noqa: E402
from gp_losses.sandbox import Sandbox  # noqa: E402
from gp_losses.sandboxed import InProcess  # noqa: E402


def candidates(context, n: int, seed: int = 0):
    """`n` random losses of the first branch that the static checks let through."""
    rng, space, out = random.Random(seed), context.space, []
    while len(out) < n:
        (tree,) = space.random_loss(rng)
        if static_reason(tree, space.branches[0]) is None:
            out.append(str(tree))
    return out


def measure(runner, spec, exprs, baseline, train_jobs):
    start = time.perf_counter()
    runner.start()
    started = time.perf_counter() - start
    protocol = []
    for expr in exprs:
        t = time.perf_counter()
        runner.call(ProtocolJob(spec.key, 0, expr, True), 600)
        protocol.append(time.perf_counter() - t)
    train = []
    for seed in range(train_jobs):
        t = time.perf_counter()
        runner.call(TrainJob(spec.key, baseline, seed), 3600)
        train.append(time.perf_counter() - t)
    runner.close()
    return {"start_s": round(started, 3), "protocol_ms_mean": round(1e3 * statistics.mean(protocol), 3),
            "protocol_ms_median": round(1e3 * statistics.median(protocol), 3),
            "train_s_mean": round(statistics.mean(train), 4)}


def start_up(spec, repeats: int = 3):
    """Seconds to start a sandbox and set its task up, the median of `repeats` starts."""
    took = []
    for _ in range(repeats):
        box = Sandbox(spec)
        t = time.perf_counter()
        box.start()
        took.append(time.perf_counter() - t)
        box.close()
    return round(statistics.median(took), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cls")
    parser.add_argument("--protocol-jobs", type=int, default=200)
    parser.add_argument("--train-jobs", type=int, default=5)
    args = parser.parse_args()
    config = load_run_config(args.task, None, [])
    context = build_context(config)
    spec = RunSpec(to_dict(config), "bench-isolation")
    exprs = candidates(context, args.protocol_jobs)
    baseline = next(iter(context.task_cls.baselines.values()))
    in_process = measure(InProcess(spec), spec, exprs, baseline, args.train_jobs)
    child = measure(Sandbox(spec), spec, exprs, baseline, args.train_jobs)
    restart = {"forked": start_up(spec)}
    sandbox._NO_STARTER = True
    restart["fresh_interpreter"] = start_up(spec)
    print(json.dumps({
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "task": args.task, "protocol_jobs": len(exprs), "train_jobs": args.train_jobs,
        "in_process": in_process, "sandbox": child,
        "protocol_overhead_ms": round(child["protocol_ms_mean"] - in_process["protocol_ms_mean"], 3),
        "train_overhead_s": round(child["train_s_mean"] - in_process["train_s_mean"], 4),
        "second_sandbox_start_s": restart,
    }, indent=2))


if __name__ == "__main__":
    main()
