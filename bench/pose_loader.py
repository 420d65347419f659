"""Peak memory and speed of pose training with the in-memory crops and with the streaming
loader, on one large synthetic set in the COCO layout; prints JSON.

The set (`--persons` training people, written once into the cache by the task's own
generator) is trained with `gp-losses train --task pose --loss mse` at the paper's 256 x 192
input (`--input`; the small network, stride 4), once per loader:

    memory   every crop and heatmap made at setup and kept as tensors (the built-in default)
    stream   a torch DataLoader that decodes, crops and draws targets per batch, with
             Simple Baselines' augmentation (runs/paper/pose_coco.yaml), `--workers` processes

Peak resident memory is the largest of the training process and its loader processes
(getrusage of the finished command). A command the kernel kills for want of memory is
reported as killed, with the memory it had reached.

    python bench/pose_loader.py                     # 20,000 people, 20 iterations of 32
    python bench/pose_loader.py --input 64 48       # the built-in proxy's crop size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOADERS = {"memory": ["task.options.loader=memory"],
           "stream": ["task.options.loader=stream", "task.options.augment=true"]}


def train(persons: int, loader: str, args: argparse.Namespace) -> dict:
    height, width = args.input
    sets = [f"task.options.synthetic_train={persons}", f"task.options.input_height={height}",
            f"task.options.input_width={width}", "task.options.stride=4", f"task.options.iterations={args.iterations}",
            "task.options.batch_size=32", "task.options.warmup=5", f"task.options.loader_workers={args.workers}",
            *LOADERS[loader]]
    cmd = [sys.executable, "-m", "gp_losses", "train", "--task", "pose", "--loss", "mse"]
    cmd += [a for s in sets for a in ("--set", s)]
    print(f"running: {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # this process runs one command
    entry = {"loader": loader, "seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2 ** 20, 3)}
    if proc.returncode != 0:  # e.g. killed by the kernel for want of memory: a result, reported as such
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return {**entry, "status": how, "stderr": proc.stderr[-500:]}
    result = json.loads(proc.stdout)
    return {**entry, "status": result["status"], "ap": result["metrics"].get("ap")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0, help="loader processes (stream)")
    parser.add_argument("--loaders", nargs="+", default=["stream", "memory"], choices=list(LOADERS))
    parser.add_argument("--input", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    args = parser.parse_args()
    from tasks.pose import PoseTask

    start = time.perf_counter()
    PoseTask(PoseTask.Options(synthetic_train=args.persons)).root()  # generate once, not timed below
    generated = time.perf_counter() - start
    runs = []
    for loader in args.loaders:  # each in a fresh process: RUSAGE_CHILDREN is a peak over all children
        done = subprocess.run([sys.executable, __file__, "--persons", str(args.persons), "--iterations",
                               str(args.iterations), "--workers", str(args.workers), "--input",
                               *map(str, args.input), "--one", loader],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        runs.append(json.loads(done.stdout))
    print(json.dumps({"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                      "persons": args.persons, "input": args.input, "iterations": args.iterations,
                      "batch": 32, "loader_workers": args.workers,
                      "generate_seconds": round(generated, 1), "runs": runs}, indent=2))


def one() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--input", type=int, nargs=2)
    parser.add_argument("--one")
    args = parser.parse_args()
    print(json.dumps(train(args.persons, args.one, args)))


if __name__ == "__main__":
    one() if "--one" in sys.argv else main()
