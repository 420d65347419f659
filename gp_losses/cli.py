"""The `gp-losses` command line (also `python -m gp_losses`).

JSON goes to stdout, progress and logs to stderr. Exit codes: 0 ok, 2 bad input (flags,
config, loss string, data path), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional

from gp_losses import __version__
from gp_losses.commands import (cmd_config, cmd_export, cmd_formula, cmd_mutate, cmd_plot, cmd_probe, cmd_retrain,
                                cmd_sample, cmd_search, cmd_show, cmd_tasks, cmd_train)
from gp_losses.core.errors import GpLossesError, Stopped

log = logging.getLogger("gp_losses")


EXAMPLES = {
    "search": ["gp-losses search --task cls --evaluations 20 --out outputs/cls-demo --workers 2"],
    "probe": ["gp-losses probe --task cls --loss 'Neg(Mul(y, Log(yhat)))'"],
    "train": ["gp-losses train --task cls --loss ce --seed 1"],
    "config": ["gp-losses config --task seg --set task.metric=bf1"],
    "tasks": ["gp-losses tasks"],
    "show": ["gp-losses show outputs/cls-demo --top 3"],
    "retrain": ["gp-losses retrain outputs/cls-demo --top 2 --seeds 3"],
    "export": ["gp-losses export outputs/cls-demo -o found_loss.py"],
    "plot": ["gp-losses plot outputs/cls-demo outputs/cls-other -o progress.png"],
    "formula": ["gp-losses formula 'Neg(Mul(y, Log(yhat)))' --at yhat=0.7 --at y=1"],
    "sample": ["gp-losses sample --n 5 --seed 1"],
    "mutate": ["gp-losses mutate 'Neg(Mul(y, Log(yhat)))' --n 3"],
}
"""The example each subcommand's help ends with (tests parse them all and run those that need no
run directory)."""


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


def _log_arguments(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="warnings and errors only on stderr, no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gp-losses", description="Search loss functions from scratch (AutoLoss-Zero).")
    parser.add_argument("--version", action="version", version=f"gp-losses {__version__}")
    _log_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # -v / -q after the command too (`gp-losses tasks -v`); SUPPRESS keeps one given before it
    verbose = argparse.ArgumentParser(add_help=False)
    _log_arguments(verbose, default=argparse.SUPPRESS)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        example = EXAMPLES[name]
        return sub.add_parser(name, parents=[verbose], formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="example:\n" + "\n".join(f"  {line}" for line in example), **kwargs)

    p = command("search", help="run a loss search (same flags as gp_losses/main.py)")
    add_search_arguments(p)
    p.add_argument("--workers", type=_positive,
                   help="processes to search with: > 1 starts SCOOP (python -m scoop -n N) for you "
                        "(default 1; with --hostfile, the hostfile's counts)")
    p.add_argument("--hostfile", help="SCOOP's hostfile, for workers on several nodes "
                   "(docs/multi-node.md)")
    p.set_defaults(func=cmd_search)

    for name, func, helptext in (
            ("probe", cmd_probe, "run the loss-rejection protocol on one loss: JSON"),
            ("train", cmd_train, "proxy-train a task with one loss: JSON")):
        p = command(name, help=helptext)
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

    p = command("config", help="the resolved configuration of a run (YAML): the task's defaults, "
                               "--config, --set and --operators, layered; nothing runs")
    p.add_argument("--task", help="built-in task name or package.module:TaskClass")
    p.add_argument("--config", help="YAML run configuration (default: the task's runs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config key (repeatable)")
    _operators_argument(p)
    p.set_defaults(func=cmd_config)

    p = command("tasks", help="the built-in tasks: branches, metrics, baselines (JSON)")
    p.set_defaults(func=cmd_tasks)

    p = command("show", help="a run's status, hall of fame, baselines and last statistics")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--top", type=_positive, default=10, help="hall-of-fame entries (default 10)")
    p.set_defaults(func=cmd_show)

    p = command("retrain", help="train a run's best losses and the baselines again over "
                                       "seeds, scored on held-out data: RUN_DIR/retrain/report.md")
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--top", type=_positive, help="hall-of-fame losses to retrain (default retrain.top, 3)")
    p.add_argument("--ranks", type=_ranks, default=(), metavar="R,R",
                   help="the hall-of-fame ranks to retrain instead of the top K, e.g. 2 or 1,3")
    p.add_argument("--seeds", type=_positive, help="seeds per loss (default retrain.seeds, 3)")
    p.add_argument("--baselines", metavar="NAMES", help="the task's baselines to retrain, comma-separated, or none "
                   "(default retrain.baselines: all)")
    p.add_argument("--schedule", choices=("long", "proxy"), default="long",
                   help="long: the task options of retrain.options (default); proxy: the search's own")
    p.add_argument("--split", help="the split to score (default test, or val where the task has no "
                   "test); val, at the long schedule, chooses among the found losses without "
                   "touching test: retrain/report-val.md")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a key of the run's config for the retrain (repeatable)")
    p.set_defaults(func=cmd_retrain)

    p = command("export", help="a found loss as a standalone torch.nn.Module file "
                                      "(or its formula)")
    p.add_argument("run_dir", help="run directory of a search")
    p.add_argument("--rank", type=_positive, help="hall-of-fame rank (default: the search's pick, "
                   "final.json's where the search chose among finalists, else 1)")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.add_argument("--format", choices=("python", "sympy", "latex"), default="python",
                   help="python: the module (default); sympy, latex: the simplified formula")
    p.set_defaults(func=cmd_export)

    p = command("plot", help="top-5 score and loss counts of one or more runs, overlaid")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("-o", "--output", required=True, help="picture to write (.png, .pdf, .svg)")
    p.add_argument("--x", choices=("evaluations", "seconds"), default="evaluations",
                   help="x axis: proxy evaluations (default) or wall seconds")
    p.add_argument("--title", default="", help="title of the picture")
    p.set_defaults(func=cmd_plot)

    p = command("formula", help="a loss as sympy/LaTeX, optionally evaluated at a point")
    p.add_argument("expr", help="loss expression, e.g. 'Neg(Mul(y, Log(yhat)))'")
    p.add_argument("--at", action="append", default=[], metavar="NAME=VALUE",
                   help="evaluate with input NAME a 1x1x1x1 tensor of VALUE (repeatable)")
    _space_arguments(p)
    p.set_defaults(func=cmd_formula)

    p = command("sample", help="random losses from the initializer, one per line")
    p.add_argument("--n", type=_positive, default=10, help="how many (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _space_arguments(p)
    p.set_defaults(func=cmd_sample)

    p = command("mutate", help="offspring of a loss, as JSON lines with the operation used")
    p.add_argument("expr", help="parent loss expression")
    p.add_argument("--n", type=_positive, default=10, help="how many offspring (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _space_arguments(p)
    p.set_defaults(func=cmd_mutate)
    return parser


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command; map project errors to exit codes with a one-line message on stderr."""
    quiet = getattr(args, "quiet", False)
    if quiet:  # tqdm reads it, here and in the SCOOP workers this process starts
        os.environ["TQDM_DISABLE"] = "1"
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", level=level)
    try:
        return func(args)
    except GpLossesError as exc:
        print(f"gp-losses: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM inside a run (gp_losses/core/stopping.py)
        what = str(exc) if isinstance(exc, Stopped) else "stopped by SIGINT"
        note = getattr(exc, "note", "")
        print(f"gp-losses: {what}" + (f": {note}" if note else ""), file=sys.stderr)
        code = getattr(exc, "exit_code", 130)
        from gp_losses import cluster

        if cluster.running():  # the run's files and status are written; SCOOP's own teardown,
            sys.stdout.flush()  # with its launcher stopping too, can wait for ever: end here
            sys.stderr.flush()
            os._exit(code)
        return code
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
    _log_arguments(parser)
    return run(cmd_search, parser.parse_args(argv))


def program() -> None:
    """The `gp-losses` program: its console script and `python -m gp_losses`."""
    from gp_losses.sandbox import fork_starter_from_here

    fork_starter_from_here()
    sys.exit(main())


if __name__ == "__main__":
    program()
