"""What the rejection protocol decides on pose heatmap probes, and when; prints JSON.

Runs the protocol of `runs/pose.yaml` (lr 5e-3, 100 steps, both well-posedness checks on, the
early reject off) on candidates that pass the static checks:
- `random`: random depth-3 losses from the initializer, and
- `mutants`: offspring of losses that train on pose (mse, the paper's Table 8 pose loss, a
  Poisson-style loss, (yhat - y)^4) — about a third pass here, so a cut that drops passers shows.
For each it records the gain after 10, 25, 50 and 75 steps and the final decision, then
reports, for each (step, threshold) of an early reject "gain < threshold at that step", how
many eventual low-gain rejects it decides early and how many candidates that reached eta
(passed, or rejected only by the monotone/unbounded checks) it would wrongly drop.

    python bench/protocol_steps.py [--random 300] [--mutants 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gp_losses.context import build_context, load_run_config  # noqa: E402
from gp_losses.rejection import Protocol, static_reason  # noqa: E402
from gp_losses.torch_loss import compile_tree  # noqa: E402

GOOD = ["Square(Add(yhat, Neg(y)))",
        "Add(Square(Add(yhat, Neg(Square(Square(Add(y, y)))))), Square(Square(yhat)))",
        "Add(Exp(yhat), Neg(Mul(y, yhat)))",
        "Square(Square(Add(yhat, Neg(y))))"]
CHECKS = (10, 25, 50, 75)
THRESHOLDS = (0.0, 0.05, 0.1, 0.2)


def trajectory(proto: Protocol, space, tree) -> dict:
    """Gains at CHECKS along the protocol's own schedule, and its decision."""
    branch, cfg = space.branches[0], proto.config
    output = compile_tree(tree, space.operators, branch.inputs, proto._fixed_inputs(0))
    targets = proto.probe.targets[branch.name]
    z = proto.probe.outputs[branch.name].detach().clone().requires_grad_(True)
    sgd = torch.optim.SGD([z], lr=cfg.lr, momentum=cfg.momentum)
    gains = {}
    for step in range(cfg.steps):
        loss = output(proto.task.loss_inputs(branch.name, z, targets)).sum()
        if not torch.isfinite(loss) or not loss.requires_grad:
            break
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        if step + 1 in CHECKS:
            if not torch.isfinite(z).all():
                break
            gains[step + 1] = proto.gain(0, z.detach())
    result = proto.check(0, tree)
    return {"expr": str(tree), "gains": gains, "passed": result.passed, "reason": result.reason,
            "gain": result.gain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=300)
    parser.add_argument("--mutants", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ctx = build_context(load_run_config("pose", None, []))
    config = dataclasses.replace(ctx.config.protocol, reject_step=0)
    space = ctx.space
    proto = Protocol(ctx.make_task("cpu"), space.branches, space.operators, config)
    rng = random.Random(args.seed)
    parents = [space.parse(expr) for expr in GOOD]
    report = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "protocol": dataclasses.asdict(config), "sets": {}}
    for name, count in (("random", args.random), ("mutants", args.mutants)):
        rows, start = [], time.perf_counter()
        while len(rows) < count:
            loss = (space.random_loss(rng) if name == "random"
                    else space.offspring(rng.choice(parents), rng)[0])
            if static_reason(loss[0], space.branches[0]) is None:
                rows.append(trajectory(proto, space, loss[0]))
        reached = [r for r in rows if r["passed"] or r["reason"] in ("monotone", "unbounded")]
        low = [r for r in rows if r["reason"] == "low_gain"]
        cuts = {f"step{s}_below{t}": {
            "low_gain_decided_early": sum(1 for r in low if r["gains"].get(s, 1.0) < t),
            "eta_reachers_dropped": sum(1 for r in reached if r["gains"].get(s, 1.0) < t)}
            for s in CHECKS for t in THRESHOLDS}
        reasons = {}
        for r in rows:
            reasons[r["reason"] or "passed"] = reasons.get(r["reason"] or "passed", 0) + 1
        report["sets"][name] = {"candidates": len(rows), "decisions": reasons,
                                "reached_eta": len(reached), "low_gain": len(low), "cuts": cuts,
                                "passed": sorted({r["expr"] for r in rows if r["passed"]}),
                                "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
