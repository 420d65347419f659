"""The `gp-losses` command line (also `python -m gp_losses`).

JSON goes to stdout, progress and logs to stderr. Exit codes: 0 ok, 2 bad input (flags,
config, loss string, data path), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from typing import Callable, Dict, List, Optional, Sequence

from gp_losses import __version__
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


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a search, shared by `gp-losses search` and `gp_losses/main.py`."""
    parser.add_argument("--task", help="built-in task name or package.module:TaskClass")
    parser.add_argument("--config", help="YAML run configuration (default: the task's runs/*.yaml)")
    parser.add_argument("--out", help="run directory (default outputs/<task>-<metric>-<time>)")
    parser.add_argument("--seed", type=int, help="run seed")
    parser.add_argument("--evaluations", type=int, help="stop after this many proxy evaluations")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config key (repeatable)")
    _operators_argument(parser)


def _operators_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operators", action="append", default=[], metavar="package.module:NAME",
                        help="extra operators added to Table 1: a Primitive or a list (repeatable; "
                             "modules import from the current directory too)")


def cmd_search(args: argparse.Namespace) -> int:
    from gp_losses.search import run_search

    if not (args.task or args.config or args.resume):
        raise InputError("give --task NAME, a --config FILE that names task.name, or --resume RUN_DIR")
    summary = run_search(args.task, args.config, args.out, args.seed, args.evaluations,
                         args.resume, args.set, args.operators)
    print(json.dumps(summary, indent=2))
    return 0


def _task_context(args: argparse.Namespace):
    """Validated context of `--task` with `--config`, `--metric`, `--set` and `--operators`."""
    from gp_losses.context import build_context, load_run_config

    overrides = list(args.set) + ([f"task.metric={args.metric}"] if args.metric else [])
    return build_context(load_run_config(args.task, args.config, overrides, args.operators))


def resolve_loss(context, items: Sequence[str]) -> Dict[str, str]:
    """{branch: expression} from `--loss` values: an expression or a baseline name, or for a
    multi-branch task `branch=EXPR|BASELINE` per flag (branches not given take the task's
    first baseline)."""
    from gp_losses.core.errors import did_you_mean

    task, names = context.task_cls, [b.name for b in context.task_cls.branches]
    baselines = task.baselines
    default = next(iter(baselines.values()), {})
    chosen: Dict[str, str] = {}
    for item in items:
        branch, sep, value = item.partition("=")
        if not sep or "(" in branch:
            branch, value = None, item
        value = value.strip()
        if branch is not None and branch not in names:
            raise InputError(f"--loss {item!r}: unknown branch {branch!r}" + did_you_mean(branch, names)
                             + f"; branches: {', '.join(names)}")
        targets = [branch] if branch else names
        if value in baselines:
            chosen.update({b: baselines[value][b] for b in targets})
        elif branch is None and len(names) > 1:
            raise InputError(f"--loss {item!r}: task {task.name!r} has branches {', '.join(names)}; "
                             "give one --loss BRANCH=EXPR per branch, or a baseline name")
        else:
            chosen.update({b: value for b in targets})
    for b in names:
        if b not in chosen:
            if b not in default:
                raise InputError(f"no loss given for branch {b!r} and the task has no baseline for it")
            chosen[b] = default[b]
    return chosen


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
                        context.config.protocol)
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _ranks(text: str) -> tuple:
    """'1,3' -> (1, 3): hall-of-fame ranks, each >= 1."""
    try:
        return tuple(sorted({_positive(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ranks like 2 or 1,3, got {text!r}") from None


def _space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--branch-inputs", default="yhat,y,one",
                        help="comma-separated loss inputs of the branch (default yhat,y,one; "
                             "box regression: i,u,e,one)")
    _operators_argument(parser)
    parser.add_argument("--depth", type=_positive, default=3,
                        help="operators on each root-to-leaf path of a random loss (default 3)")
    parser.add_argument("--height-limit", type=_positive, default=17,
                        help="maximum tree height (default 17)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gp-losses", description="Search loss functions from scratch (AutoLoss-Zero).")
    parser.add_argument("--version", action="version", version=f"gp-losses {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="run a loss search (same flags as gp_losses/main.py)")
    add_search_arguments(p)
    p.set_defaults(func=cmd_search)

    for name, func, helptext in (
            ("probe", cmd_probe, "run the loss-rejection protocol on one loss: JSON"),
            ("train", cmd_train, "proxy-train a task with one loss: JSON")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--task", required=True, help="built-in task name or package.module:TaskClass")
        p.add_argument("--metric", help="search metric (default: the task's first)")
        p.add_argument("--loss", action="append", required=True, metavar="EXPR|BASELINE",
                       help="a loss expression or baseline name; multi-branch: BRANCH=EXPR, repeated")
        p.add_argument("--config", help="YAML run configuration (default: the task's runs/*.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a config key (repeatable)")
        _operators_argument(p)
        if name == "train":
            p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
        p.set_defaults(func=func)

    p = sub.add_parser("tasks", help="the built-in tasks: branches, metrics, baselines (JSON)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("show", help="a run's status, hall of fame, baselines and last statistics")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--top", type=_positive, default=10, help="hall-of-fame entries (default 10)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("retrain", help="train a run's best losses and the baselines again over "
                                       "seeds, scored on held-out data: RUN_DIR/retrain/report.md")
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--top", type=_positive, help="hall-of-fame losses to retrain (default retrain.top, 3)")
    p.add_argument("--ranks", type=_ranks, default=(), metavar="R,R",
                   help="the hall-of-fame ranks to retrain instead of the top K, e.g. 2 or 1,3")
    p.add_argument("--seeds", type=_positive, help="seeds per loss (default retrain.seeds, 3)")
    p.add_argument("--baselines", metavar="NAMES", help="the task's baselines to retrain, comma-separated "
                   "(default retrain.baselines: all)")
    p.add_argument("--schedule", choices=("long", "proxy"), default="long",
                   help="long: the task options of retrain.options (default); proxy: the search's own")
    p.add_argument("--split", help="the split to score (default test, or val where the task has no "
                   "test); val, at the long schedule, chooses among the found losses without "
                   "touching test: retrain/report-val.md")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the run's config for the retrain (repeatable)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("export", help="a found loss as a standalone torch.nn.Module file "
                                      "(or its formula)")
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--rank", type=_positive, help="hall-of-fame rank (default: the search's pick, "
                   "final.json's where the search chose among finalists, else 1)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--format", choices=("python", "sympy", "latex"), default="python",
                   help="python: the module (default); sympy, latex: the simplified formula")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="top-5 score and loss counts of one or more runs, overlaid")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("-o", "--output", required=True, help="picture to write (.png, .pdf, .svg)")
    p.add_argument("--x", choices=("evaluations", "seconds"), default="evaluations",
                   help="x axis: proxy evaluations (default) or wall seconds")
    p.add_argument("--title", default="", help="title of the picture")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("formula", help="a loss as sympy/LaTeX, optionally evaluated at a point")
    p.add_argument("expr", help="loss expression, e.g. 'Neg(Mul(y, Log(yhat)))'")
    p.add_argument("--at", action="append", default=[], metavar="NAME=VALUE",
                   help="evaluate with input NAME a 1x1x1x1 tensor of VALUE (repeatable)")
    _space_arguments(p)
    p.set_defaults(func=cmd_formula)

    p = sub.add_parser("sample", help="random losses from the initializer, one per line")
    p.add_argument("--n", type=_positive, default=10, help="how many (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _space_arguments(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("mutate", help="offspring of a loss, as JSON lines with the operation used")
    p.add_argument("expr", help="parent loss expression")
    p.add_argument("--n", type=_positive, default=10, help="how many offspring (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _space_arguments(p)
    p.set_defaults(func=cmd_mutate)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command; map project errors to exit codes with a one-line message on stderr."""
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s",
                        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        return func(args)
    except GpLossesError as exc:
        print(f"gp-losses: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `gp-losses sample --n 1000 | head`
        return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args)


def search_main(argv: Optional[List[str]] = None) -> int:
    """`gp_losses/main.py`: the search flags without a subcommand."""
    parser = argparse.ArgumentParser(prog="gp_losses/main.py",
                                     description="Search a loss function for a task.")
    add_search_arguments(parser)
    parser.add_argument("--version", action="version", version=f"gp-losses {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return run(cmd_search, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
