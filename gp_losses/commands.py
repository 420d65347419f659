"""What each `gp-losses` subcommand does, given its parsed flags (gp_losses/cli.py parses
them). JSON goes to stdout, messages to stderr; a command returns its exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from typing import Dict, Sequence

from gp_losses.core.errors import GpLossesError, InputError

log = logging.getLogger("gp_losses")


def _space(args: argparse.Namespace):
    """The one-branch search space the search-space commands work in."""
    from gp_losses.space import SearchSpace
    from gp_losses.contract import Branch
    from primitives import operator_set, terminals_by_name

    names = [n.strip() for n in args.branch_inputs.split(",") if n.strip()]
    return SearchSpace((Branch("loss", terminals_by_name(names)),),
                       operator_set(args.operators or ()), args.depth, args.height_limit)


def _point(items: Sequence[str]) -> Dict[str, float]:
    point = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            point[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--at {item!r}: expected NAME=NUMBER, e.g. --at yhat=0.7") from None
    return point


def cmd_formula(args: argparse.Namespace) -> int:
    from gp_losses.formula import evaluate_at, to_latex

    space = _space(args)
    (tree,) = space.parse(args.expr)
    (expr,) = space.formulas([tree]).values()
    out = {"expr": str(tree), "sympy": str(expr), "latex": to_latex(expr),
           "height": tree.height, "size": len(tree)}
    if args.at:
        value, grad, wrt = evaluate_at(tree, space.operators, space.branches[0].inputs,
                                       _point(args.at))
        out.update(value=value, grad=grad, grad_wrt=wrt)
    print(json.dumps(out))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    space = _space(args)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        (tree,) = space.random_loss(rng)
        print(tree)
    return 0


def cmd_mutate(args: argparse.Namespace) -> int:
    space = _space(args)
    parent = space.parse(args.expr)
    rng = random.Random(args.seed)
    for _ in range(args.n):
        (child,), (record,) = space.offspring(parent, rng)
        print(json.dumps({**record, "expr": str(child)}))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from gp_losses.driver import run_search

    if not (args.task or args.config or args.resume):
        raise InputError("give --task NAME, a --config FILE that names task.name, or --resume RUN_DIR")
    if (getattr(args, "workers", None) or 1) > 1 or getattr(args, "hostfile", None):
        return _search_scoop(args)
    summary = run_search(args.task, args.config, args.out, args.seed, args.evaluations,
                         args.resume, args.set, args.operators)
    print(json.dumps(summary, indent=2))
    return 0


def _search_scoop(args: argparse.Namespace) -> int:
    """`gp-losses search --workers N`: the search under SCOOP, started from here."""
    from gp_losses.driver import search_under_scoop

    sets = list(args.set) + ([f"seed={args.seed}"] if args.seed is not None else [])
    quiet = getattr(args, "quiet", False)
    flags = [flag for flag, on in (("-v", getattr(args, "verbose", False)), ("-q", quiet)) if on]
    try:
        search_under_scoop(args.task, args.config, args.out, args.resume, args.evaluations, sets, args.operators,
                           args.workers, args.hostfile, flags=flags, quiet_launcher=quiet)
    except GpLossesError as exc:
        if getattr(exc, "from_status", False):
            log.debug("%s", exc)  # the search's own message is above, on stderr
            return exc.exit_code
        raise  # nothing of the search's own: say why
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from gp_losses import config as cfg
    from gp_losses.context import build_context, load_run_config

    if not (args.task or args.config):
        raise InputError("give --task NAME or a --config FILE that names task.name")
    context = build_context(load_run_config(args.task, args.config, args.set, args.operators))
    # the task's metric and every one of its options, as the run would use them
    resolved = cfg.replace(context.config, task={"metric": context.metric,
                                                 "options": cfg.to_dict(context.options)})
    sys.stdout.write(cfg.dump(resolved))
    return 0


def _task_context(args: argparse.Namespace):
    """Validated context of `--task` with `--config`, `--metric`, `--set` and `--operators`."""
    from gp_losses.context import build_context, load_run_config

    overrides = list(args.set) + ([f"task.metric={args.metric}"] if args.metric else [])
    return build_context(load_run_config(args.task, args.config, overrides, args.operators))


def resolve_loss(context, items: Sequence[str]) -> Dict[str, str]:
    """{branch: expression} from `--loss` values (gp_losses.context.loss_exprs)."""
    from gp_losses.context import loss_exprs

    return loss_exprs(context.task_cls, items, "--loss")


def cmd_probe(args: argparse.Namespace) -> int:
    from gp_losses.rejection import Protocol
    from gp_losses.sandboxed import device_for
    from gp_losses.torch_loss import PythonLoss

    context = _task_context(args)
    import torch

    torch.set_num_threads(context.config.proxy.threads)
    loss = context.space.parse(resolve_loss(context, args.loss))
    exprs = context.space.format(loss)
    for branch, tree in zip(context.space.branches, loss):
        if isinstance(tree, PythonLoss):
            raise InputError(f"--loss: branch {branch.name!r} is the Python loss {tree.name!r}; the "
                             "rejection protocol checks trees only (train it with `gp-losses train`)")
    device = device_for(context.config.proxy.device, 0, torch.cuda.device_count())
    protocol = Protocol(context.make_task(device), context.space.branches, context.space.operators,
                        context.config.protocol, context.pareto)
    branches = {}
    for k, branch in enumerate(context.space.branches):
        branches[branch.name] = {"expr": exprs[branch.name], **protocol.check(k, loss[k]).to_dict()}
    print(json.dumps({"task": context.task_cls.name, "metric": context.metric,
                      "passed": all(b["passed"] for b in branches.values()),
                      "eta": context.config.protocol.eta, "branches": branches}, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from gp_losses.evaluate import proxy_evaluate
    from gp_losses.sandboxed import device_for

    context = _task_context(args)
    import torch

    torch.set_num_threads(context.config.proxy.threads)
    parsed = context.space.parse(resolve_loss(context, args.loss))
    exprs, loss = context.space.format(parsed), context.space.compile(parsed)
    device = device_for(context.config.proxy.device, 0, torch.cuda.device_count())
    result = proxy_evaluate(context.make_task(device), loss, args.seed,
                            context.config.proxy.timeout_s, context.config.search.stop_invalid)
    fixed = {"fixed": context.task_cls.fixed} if context.task_cls.fixed else {}  # search.branches left out
    print(json.dumps({"task": context.task_cls.name, "metric": context.metric, "seed": args.seed,
                      "loss": exprs, **fixed, "device": device, **result.to_dict()}, indent=2))
    return 0


def _number(text: str):
    """A logbook cell as the number it holds (int, float, or None for an empty/nan cell)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return None if value != value else value  # nan -> null in JSON
    return text or None


def cmd_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gp_losses.context import build_context
    from gp_losses import config as cfg
    from gp_losses.outcomes import branch_counts
    from gp_losses.recorder import formulas
    from gp_losses.rundir import RunDir

    run = RunDir(Path(args.run_dir))
    if not (run.path / "status.json").is_file():
        raise InputError(f"{args.run_dir!r} is not a run directory (no status.json)")
    rows = run.read_logbook()
    hall = run.hall_of_fame()[:args.top]
    if any("formula" in entry and entry["formula"] is None for entry in hall):  # a running search
        hall = formulas(hall, build_context(cfg.load(run.path / "config.yaml")).space)
    print(json.dumps({"run_dir": str(run.path), "status": run.owned_status(), "hall_of_fame": hall,
                      "baselines": run.read_json("baselines.json", {}),
                      "noise": run.read_json("noise.json", {}),
                      "final": run.read_json("final.json", {}),
                      "last_batch": {k: _number(v) for k, v in rows[-1].items()} if rows else {},
                      "branches": branch_counts(run.read_evaluations())}, indent=2))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from gp_losses.retrain import retrain

    overrides = list(args.set)
    if args.baselines is not None:
        names = [n.strip() for n in args.baselines.split(",") if n.strip()]
        overrides.append(f"retrain.baselines=[{', '.join(names)}]")
    summary = retrain(args.run_dir, args.top, args.seeds, args.schedule, overrides, args.split,
                      args.ranks)
    log.info("report: %s", summary.pop("report"))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gp_losses import export

    if args.format == "python":
        text = export.run_source(args.run_dir, args.rank)
    else:
        formulas = export.formula(args.run_dir, args.rank, args.format)
        text = "\n".join(f if len(formulas) == 1 else f"{b}: {f}" for b, f in formulas.items()) + "\n"
    if args.output:
        from pathlib import Path

        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise InputError(f"-o {args.output!r}: cannot write it: {exc.strerror}") from None
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from gp_losses.plot import plot_runs

    path = plot_runs(args.run_dirs, args.output, args.x, args.title)
    log.info("wrote %s", path)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from gp_losses.context import default_config_path
    from tasks import TASKS

    out = []
    for name in TASKS:
        task = TASKS.get(name)
        config = default_config_path(name)
        out.append({"name": name, "description": " ".join((task.__doc__ or "").split()),
                    "branches": [{"name": b.name, "inputs": list(b.input_names), "weight": b.weight}
                                 for b in task.branches],
                    "metrics": list(task.metrics), "baselines": task.baselines,
                    "python_losses": {b: sorted(fns) for b, fns in task.python_losses.items()},
                    "splits": list(task.splits),
                    "config": f"runs/{config.name}" if config else None})
    print(json.dumps(out, indent=2))
    return 0
