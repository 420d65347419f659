"""Throughput and agreement of the loss-rejection protocol; prints JSON.

For each probe set (the `cls` task; segmentation-shaped probes: 5 x 21 x 64 x 64, blob targets,
logits of a random conv net) and each protocol policy, it runs the protocol on
- `random`: random depth-3 losses from the initializer (almost all negatives), and
- `mutants`: two-mutation offspring of good losses (CE, squared error, two of the paper's
  Table 8 losses), where about one in ten passes and disagreement would show,
and reports raw candidates per minute with 1 and 2 processes (one torch thread each) and the
share of accept/reject decisions equal to the full paper protocol's (lr 1e-3, 500 steps, no
early exit). Decisions are deterministic, so they are computed once per policy.

With `--mix search` the second kind is `offspring` instead: what a search makes of a good
parent (`variation.offspring`: a copy 10 %, a new random loss 50 %, two mutations 40 %), and
each process keeps the decisions it made, as a search's workers do, so a copy met again costs
nothing. Policies `cls_config` and `pose_config` are the protocols of runs/cls.yaml and
runs/pose.yaml (runs/seg.yaml's is `fast50_early`); `fast_early_r25` adds an early reject at
step 25 to `fast_early`. `--only seg_task` runs the `seg` task itself instead of the stand-in
probes: its probe images (5 x 6 x 96 x 96, DeepLabLite at initialization) scored by
`--metric`.

    python bench/rejection.py [--random 600] [--mutants 200] [--subset 200] [--only seg]
    python bench/rejection.py --only seg --mix search --random 300 --mutants 300 \
        --policies paper_full cls_config pose_config
    python bench/rejection.py --only seg_task --metric bf1 --mix search --random 200 \
        --mutants 120 --policies paper_full fast50_early
    python bench/rejection.py --only seg_task --metric miou bf1 miou,bf1 --random 200 --mutants 200

With several `--metric`s (seg_task, a search's mix, the first policy: runs/seg.yaml's
`fast50_early` by default) it compares metrics instead of policies: what each passes of the
same candidates, and for a comma list (a Pareto search's objectives) how many of its passes no
objective alone would have passed, and how many it misses that one alone would pass.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import time
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gp_losses import variation  # noqa: E402
from gp_losses.config import ProtocolConfig  # noqa: E402
from gp_losses.rejection import Protocol  # noqa: E402
from gp_losses.space import SearchSpace  # noqa: E402
from gp_losses.trees import parse_tree  # noqa: E402

GOOD = ["Neg(Mul(y, Log(yhat)))", "Square(Add(yhat, Neg(y)))",
        "Exp(Square(Add(y, Neg(Sqrt(yhat)))))",                      # Table 8, seg gAcc
        "Log(Mul(y, Log(Add(y, Mul(Add(y, yhat), Inv(yhat))))))"]     # Table 8, seg FWIoU
POLICIES = {
    "paper_full": dict(lr=1e-3, steps=500, early_exit=False),
    "paper_early": dict(lr=1e-3, steps=500, early_exit=True, check_every=25),
    "fast_full": dict(lr=5e-3, steps=100, early_exit=False),
    "fast_full_no_checks": dict(lr=5e-3, steps=100, early_exit=False, reject_monotone=False,
                                reject_unbounded=False),
    "fast_early": dict(lr=5e-3, steps=100, early_exit=True, check_every=25),
    "fast50_early": dict(lr=1e-2, steps=50, early_exit=True, check_every=25),
    "cls_config": dict(lr=5e-3, steps=100, early_exit=True, check_every=25),
    "pose_config": dict(lr=5e-3, steps=100, early_exit=False, reject_step=10, reject_gain=0.1),
    "fast_early_r25": dict(lr=5e-3, steps=100, early_exit=True, check_every=25, reject_step=25,
                           reject_gain=0.02),
}
STATIC_SAMPLE = 25
"""Statically rejected candidates per reason that are also run through the full protocol."""

_PROTOCOL: Protocol = None
_SPACE: SearchSpace = None
_MEMO: Dict[str, Tuple[bool, str, int]] = {}
_REMEMBER = False


SEG_METRIC = "miou"
"""The target metric of `seg_task` (`--metric`); several, comma-separated (`miou,bf1`): the
objectives of a Pareto search, whose protocol passes a gain of eta on any one of them."""


def _seg_context():
    from gp_losses.context import build_context, load_run_config

    metrics = SEG_METRIC.split(",")
    override = (f"task.metric={SEG_METRIC}" if len(metrics) == 1
                else f"search.objectives=[{', '.join(metrics)}]")
    return build_context(load_run_config("seg", None, [override]))


def make_task(name: str):
    if name == "cls":
        from tasks.cls import DigitsTask

        return DigitsTask()
    if name == "seg_task":  # the task itself, as runs/seg.yaml sets it up
        return _seg_context().make_task()
    from seg_probe import SegProbeTask

    return SegProbeTask(size=64, classes=21)


def _init(task_name: str, policy: Dict, remember: bool = False) -> None:
    global _PROTOCOL, _SPACE, _REMEMBER
    _REMEMBER = remember
    _MEMO.clear()
    torch.set_num_threads(1)
    task = make_task(task_name)
    _SPACE = SearchSpace(task.branches)
    objectives = _seg_context().pareto if task_name == "seg_task" else ()
    _PROTOCOL = Protocol(task, _SPACE.branches, _SPACE.operators, ProtocolConfig(**policy), objectives)


def _check(expr: str, static: bool = True) -> Tuple[bool, str, int]:
    if _REMEMBER and expr in _MEMO:
        return _MEMO[expr]
    result = _PROTOCOL.check(0, parse_tree(expr, _SPACE.psets[0]), static=static)
    decision = result.passed, result.reason or "", result.steps
    if _REMEMBER:
        _MEMO[expr] = decision
    return decision


def _check_no_static(expr: str) -> Tuple[bool, str, int]:
    return _check(expr, static=False)


def run(task_name: str, policy: Dict, exprs: List[str], processes: int, fn=_check, remember=False):
    """(decisions, seconds) for `exprs` on `processes` worker processes (start-up excluded)."""
    ctx = mp.get_context("fork")
    with ctx.Pool(processes, initializer=_init, initargs=(task_name, policy, remember)) as pool:
        pool.map(_warm, range(processes))  # probes built, torch loaded
        start = time.perf_counter()
        results = pool.map(fn, exprs, chunksize=1)
        return results, time.perf_counter() - start


def _warm(_: int) -> None:
    _PROTOCOL.check(0, parse_tree(GOOD[0], _SPACE.psets[0]))


def candidates(task_name: str, n_random: int, n_mutants: int, seed: int = 0,
               mix: str = "mutants") -> Dict[str, List[str]]:
    task = make_task(task_name)
    space = SearchSpace(task.branches)
    rng = random.Random(seed)
    rand = [str(space.random_loss(rng)[0]) for _ in range(n_random)]
    second = []
    for k in range(n_mutants):
        (parent,) = space.parse(GOOD[k % len(GOOD)])
        if mix == "search":
            tree, _, _ = variation.offspring(parent, space.psets[0], rng, space.depth, space.height_limit)
        else:
            tree, _ = variation.mutate(parent, space.psets[0], rng, 2, space.height_limit)
        second.append(str(tree))
    return {"random": rand, "offspring" if mix == "search" else "mutants": second}


def bench_task(task_name: str, n_random: int, n_mutants: int, subset: int, policies: Dict,
               mix: str = "mutants") -> Dict:
    sets = candidates(task_name, n_random, n_mutants, mix=mix)
    second = "offspring" if mix == "search" else "mutants"
    remember = mix == "search"
    everything = sets["random"] + sets[second]
    kinds = ["random"] * len(sets["random"]) + [second] * len(sets[second])
    if remember:  # interleaved, as a search's batches come: copies are met after their parents
        order = random.Random(2).sample(range(len(everything)), len(everything))
        everything, kinds = [everything[i] for i in order], [kinds[i] for i in order]
    rng = random.Random(1)
    sub = sorted(rng.sample(range(len(everything)), min(subset, len(everything))))
    out: Dict = {"candidates": {k: len(v) for k, v in sets.items()}, "policies": {}}
    reference = None
    for name, policy in policies.items():
        decisions, seconds2 = run(task_name, policy, everything, 2, remember=remember)
        _, seconds1 = run(task_name, policy, [everything[i] for i in sub], 1, remember=remember)
        passed = [d[0] for d in decisions]
        if reference is None:
            reference = passed
        entry = {"policy": policy,
                 "per_minute_2proc": round(60 * len(everything) / seconds2, 1),
                 "per_minute_1proc": round(60 * len(sub) / seconds1, 1),
                 "mean_steps": round(sum(d[2] for d in decisions) / len(decisions), 1)}
        for kind in ("random", second, "all"):
            idx = [i for i, k in enumerate(kinds) if kind in (k, "all")]
            agree = sum(passed[i] == reference[i] for i in idx)
            entry[kind] = {"n": len(idx), "passed": sum(passed[i] for i in idx),
                           "agreement": round(agree / len(idx), 4),
                           "false_accepts": sum(passed[i] and not reference[i] for i in idx),
                           "false_rejects": sum(reference[i] and not passed[i] for i in idx)}
        reasons: Dict[str, int] = {}
        for d in decisions:
            if not d[0]:
                reasons[d[1]] = reasons.get(d[1], 0) + 1
        entry["rejected_by_reason"] = reasons
        out["policies"][name] = entry
        print(json.dumps({"task": task_name, name: entry}), file=sys.stderr, flush=True)
        if name == "paper_full":
            out["static_checks"] = static_agreement(task_name, everything, decisions)
            print(json.dumps({"task": task_name, "static_checks": out["static_checks"]}),
                  file=sys.stderr, flush=True)
    return out


def static_agreement(task_name: str, exprs: List[str], decisions) -> Dict:
    """Run a sample of the statically rejected candidates through the full protocol anyway:
    a static rejection that the protocol would have passed is a false reject."""
    sample: Dict[str, List[str]] = {}
    for expr, (_, reason, _) in zip(exprs, decisions):
        if reason in ("no_prediction", "no_target", "no_interaction"):
            if len(sample.setdefault(reason, [])) < STATIC_SAMPLE:
                sample[reason].append(expr)
    flat = [e for v in sample.values() for e in v]
    results, _ = run(task_name, POLICIES["paper_full"], flat, 2, _check_no_static)
    out, k = {}, 0
    for reason, items in sample.items():
        passed = sum(r[0] for r in results[k:k + len(items)])
        out[reason] = {"checked": len(items), "passed_full_protocol": passed}
        k += len(items)
    return out


def bench_rules(specs: List[str], n_random: int, n_mutants: int, name: str, policy: Dict) -> Dict:
    """One policy on the `seg_task`'s candidates scored by each metric spec in turn (`miou`,
    `bf1`, `miou,bf1`): what each passes, and how a Pareto spec's passes (a gain of eta on any
    one objective) relate to those of its objectives alone."""
    global SEG_METRIC
    sets = candidates("seg_task", n_random, n_mutants, mix="search")
    everything = sets["random"] + sets["offspring"]
    kinds = ["random"] * len(sets["random"]) + ["offspring"] * len(sets["offspring"])
    order = random.Random(2).sample(range(len(everything)), len(everything))
    everything, kinds = [everything[i] for i in order], [kinds[i] for i in order]
    passed: Dict[str, List[bool]] = {}
    out: Dict = {"policy": {name: policy}, "candidates": {k: len(v) for k, v in sets.items()},
                 "specs": {}}
    for spec in specs:
        SEG_METRIC = spec
        decisions, seconds = run("seg_task", policy, everything, 2, remember=True)
        passed[spec] = [d[0] for d in decisions]
        entry = {"per_minute_2proc": round(60 * len(everything) / seconds, 1),
                 **{kind: sum(p for p, k in zip(passed[spec], kinds) if k == kind)
                    for kind in ("random", "offspring")},
                 "passed": sum(passed[spec])}
        parts = spec.split(",")
        if len(parts) > 1 and all(p in passed for p in parts):
            union = [any(passed[p][i] for p in parts) for i in range(len(everything))]
            entry["passed_by_one_objective_alone"] = sum(union)
            entry["only_here"] = sum(a and not b for a, b in zip(passed[spec], union))
            entry["missed"] = sum(b and not a for a, b in zip(passed[spec], union))
            for p in parts:
                entry[f"not_by_{p}_alone"] = sum(a and not b for a, b in zip(passed[spec], passed[p]))
        out["specs"][spec] = entry
        print(json.dumps({"spec": spec, **entry}), file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", type=int, default=600)
    parser.add_argument("--mutants", type=int, default=200)
    parser.add_argument("--subset", type=int, default=200, help="candidates timed on 1 process")
    parser.add_argument("--only", choices=["cls", "seg", "seg_task"],
                        help="seg: the stand-in probes; seg_task: the seg task's own probe images and "
                             "metric (runs/seg.yaml); default: cls and seg")
    parser.add_argument("--metric", nargs="+", default=["miou"],
                        help="seg_task's target metric (default miou); several (miou bf1 miou,bf1): "
                             "the first policy with each, a comma list as a Pareto search's objectives")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES),
                        help="measure only these (the first is the agreement reference)")
    parser.add_argument("--mix", choices=["mutants", "search"], default="mutants",
                        help="second kind of candidate: two-mutation offspring, or a search's offspring")
    args = parser.parse_args()
    report = {"benchmark": "rejection", "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "mix": args.mix, "results": {}}
    if args.only == "seg_task":
        report["metric"] = args.metric if len(args.metric) > 1 else args.metric[0]
    policies = {name: POLICIES[name] for name in (args.policies or POLICIES)}
    if args.only == "seg_task" or len(args.metric) > 1:
        from gp_losses.context import resolve_task

        known = resolve_task("seg").metrics
        wrong = [m for spec in args.metric for m in spec.split(",") if m not in known]
        if wrong:
            parser.error(f"--metric: the seg task has no metric {wrong[0]!r}; its metrics: {', '.join(known)}")
    if len(args.metric) > 1:
        name = next(iter(policies)) if args.policies else "fast50_early"
        report["results"]["seg_task"] = bench_rules(args.metric, args.random, args.mutants, name,
                                                    POLICIES[name])
        print(json.dumps(report, indent=2))
        return
    global SEG_METRIC
    SEG_METRIC = args.metric[0]
    for task_name in ("cls", "seg", "seg_task"):
        if args.only == task_name or (args.only is None and task_name != "seg_task"):
            report["results"][task_name] = bench_task(task_name, args.random, args.mutants, args.subset,
                                                      policies, args.mix)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
