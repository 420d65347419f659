"""From a validated config to the objects of a run: the task class, its options, the space.

Built the same way in the main process and, lazily, in every worker, from plain config data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Type

from gp_losses import config as cfg
from gp_losses.config import ConfigError, RunConfig
from gp_losses.contract import Task
from gp_losses.core.errors import InputError, did_you_mean
from gp_losses.pareto import Objective, parse_objectives
from gp_losses.space import SearchSpace
from gp_losses.torch_loss import PythonLoss
from primitives import operator_set
from tasks import TASKS

RUNS_DIR = Path(__file__).resolve().parent.parent / "runs"
"""The run configurations (`runs/<task>.yaml` holds a task's defaults): beside the package in a
checkout, and installed beside it as package data (setup.cfg), so found from any directory."""


def resolve_task(name: str) -> Type[Any]:
    """The Task class for a built-in name or a `package.module:NAME` path, where NAME is a
    Task subclass or a factory: a function of no arguments that returns one."""
    if not name:
        raise ConfigError("task.name: no task given; use --task NAME")
    task_cls = TASKS.get(name)
    if callable(task_cls) and not isinstance(task_cls, type):
        task_cls = _call_factory(name, task_cls)
    if not (isinstance(task_cls, type) and issubclass(task_cls, Task)):
        raise InputError(f"task {name!r}: expected a subclass of gp_losses.contract.Task, got {task_cls!r}")
    return task_cls


def _call_factory(name: str, factory: Any) -> Any:
    cached = _FACTORIES.get(name)
    if cached is not None and cached[0] is factory:
        return cached[1]
    try:
        made = factory()
    except TypeError as exc:
        raise InputError(f"task {name!r}: calling the factory with no arguments failed: {exc}") from exc
    _FACTORIES[name] = (factory, made)
    return made


_FACTORIES: dict = {}
"""A factory's task class per name, made once per process (every lookup gets the same class)."""


def default_config_path(task: str) -> Optional[Path]:
    """runs/<task>.yaml for a built-in task that has one."""
    path = RUNS_DIR / f"{task}.yaml"
    return path if task in TASKS and path.is_file() else None


def load_run_config(task: Optional[str], path: Optional[str], overrides: Sequence[str],
                    operators: Sequence[str] = ()) -> RunConfig:
    """Config for a run, in layers: the task's defaults (runs/<task>.yaml), then the file
    `path`, then `--set` overrides, then `--operators`; the task is `--task` or the file's
    `task.name`. Validated, task options included."""
    data = cfg.read_yaml(Path(path)) if path else {}
    section = data.get("task")
    name = task or (section.get("name") if isinstance(section, dict) else None)
    defaults_path = default_config_path(name) if isinstance(name, str) and name else None
    defaults = cfg.read_yaml(defaults_path) if defaults_path else {}
    extra = [f"task.name={task}"] if task else []
    config = cfg.load(None, list(overrides) + extra, cfg.merge(defaults, data))
    if operators:
        config = cfg.replace(config, search={"operators": config.search.operators + tuple(operators)})
    build_context(config)  # every error surfaces here, before any work starts
    return config


def partial_task(task_cls: Type[Any], searched: Sequence[str], fixed: str) -> Type[Any]:
    """`task_cls` with only the `searched` branches (all, if none are named): a subclass whose
    `branches`, `baselines` and `python_losses` are those of the searched branches, and whose
    training adds the other branches' losses from baseline `fixed` (the task's first if "").
    The protocol checks the searched branches with the others at their ideal outputs."""
    names = [b.name for b in task_cls.branches]
    if fixed and not searched:
        raise ConfigError(f"search.fixed: {fixed!r} names the baseline of the branches left out of "
                          "search.branches, which names none (every branch is searched); set "
                          "search.branches too, or drop search.fixed")
    unknown = [b for b in searched if b not in names]
    if unknown:
        raise ConfigError(f"search.branches: task {task_cls.name!r} has no branch {unknown[0]!r}"
                          + did_you_mean(unknown[0], names) + f"; branches: {', '.join(names)}")
    if len(set(searched)) != len(searched):
        raise ConfigError(f"search.branches: a branch is named twice in {list(searched)}")
    baseline = fixed or next(iter(task_cls.baselines), "")
    if baseline not in task_cls.baselines:
        raise ConfigError(f"search.fixed: task {task_cls.name!r} has no baseline {baseline!r}"
                          + did_you_mean(baseline, list(task_cls.baselines))
                          + f"; baselines: {', '.join(task_cls.baselines)}")
    keep = [b for b in task_cls.branches if not searched or b.name in searched]
    if len(keep) == len(names):
        return task_cls
    held = [b for b in task_cls.branches if b not in keep]
    held_space = SearchSpace(held, python_losses=task_cls.python_losses)
    held_loss = held_space.compile(held_space.parse({b.name: task_cls.baselines[baseline][b.name] for b in held}))
    kept = {b.name for b in keep}

    def train(self, loss, seed):
        def total(values):  # Eq. 4 over all branches: the searched ones', then the fixed ones'
            return loss({k: v for k, v in values.items() if k in kept}) + held_loss(values)
        return task_cls.train(self, total, seed)

    return type(task_cls.__name__, (task_cls,), {
        "__module__": task_cls.__module__, "__doc__": task_cls.__doc__,
        "branches": tuple(keep), "train": train,
        "fixed": {b.name: task_cls.baselines[baseline][b.name] for b in held},
        "baselines": {name: {k: v for k, v in exprs.items() if k in kept}
                      for name, exprs in task_cls.baselines.items()},
        "python_losses": {k: v for k, v in task_cls.python_losses.items() if k in kept},
        "loss_inputs_doc": {k: v for k, v in task_cls.loss_inputs_doc.items() if k in kept}})


def loss_exprs(task_cls: Type[Any], items: Sequence[str], where: str) -> Dict[str, str]:
    """{branch: expression} from items as `--loss` takes them: an expression or a baseline
    name, or for a multi-branch task `branch=EXPR|BASELINE` per item (branches not given take
    the task's first baseline). `where` names the items in errors."""
    names = [b.name for b in task_cls.branches]
    baselines = task_cls.baselines
    default = next(iter(baselines.values()), {})
    chosen: Dict[str, str] = {}
    for item in items:
        branch, sep, value = item.partition("=")
        if not sep or "(" in branch:
            branch, value = None, item
        branch, value = (branch.strip() if branch else None), value.strip()
        if branch is not None and branch not in names:
            raise InputError(f"{where} {item!r}: unknown branch {branch!r}" + did_you_mean(branch, names)
                             + f"; branches: {', '.join(names)}")
        targets = [branch] if branch else names
        if value in baselines:
            chosen.update({b: baselines[value][b] for b in targets})
        elif branch is None and len(names) > 1:
            raise InputError(f"{where} {item!r}: task {task_cls.name!r} has branches {', '.join(names)}; "
                             "give one BRANCH=EXPR per branch, or a baseline name")
        else:
            chosen.update({b: value for b in targets})
    for b in names:
        if b not in chosen:
            if b not in default:
                raise InputError(f"{where}: no loss given for branch {b!r} and the task has no baseline for it")
            chosen[b] = default[b]
    return chosen


class Seed(NamedTuple):
    """A loss of `search.seed_losses`: the entry as given and its expression per branch."""

    entry: str
    exprs: Dict[str, str]


def seed_losses(task_cls: Type[Any], space: SearchSpace, entries: Sequence[str]) -> Tuple[Seed, ...]:
    """`search.seed_losses` as (entry, {branch: expression}), each branch a tree of the space:
    a loss written in Python cannot join the population (it has no tree to vary)."""
    out = []
    for i, entry in enumerate(entries):
        where = f"search.seed_losses[{i}]"
        try:
            exprs = loss_exprs(task_cls, [part for part in entry.split(";") if part.strip()] or [""], where)
            loss = space.parse(exprs)
        except InputError as exc:
            text = str(exc) if str(exc).startswith(where) else f"{where}: {entry!r}: {exc}"
            if "(" not in entry and "=" not in entry:  # a name: perhaps a baseline misspelt
                text += (f"; or a baseline of task {task_cls.name!r}: {', '.join(task_cls.baselines)}"
                         + did_you_mean(entry.strip(), list(task_cls.baselines)))
            raise ConfigError(text) from None
        for branch, tree in zip(space.branches, loss):
            if isinstance(tree, PythonLoss):
                raise ConfigError(f"{where}: {entry!r}: branch {branch.name!r} is the Python loss "
                                  f"{tree.name!r}, which has no tree to vary: give that branch an "
                                  f"expression ({branch.name}=EXPR), or leave it out of search.branches")
        out.append(Seed(entry, {b: str(t) for b, t in zip(space.branch_names, loss)}))
    return tuple(out)


@dataclass
class Context:
    config: RunConfig
    task_cls: Type[Any]
    options: Any
    space: SearchSpace
    seeds: Tuple[Seed, ...] = ()
    """The warm start's losses (`search.seed_losses`), checked."""
    objectives: Tuple[Objective, ...] = ()
    """`search.objectives`, checked; two or more: a Pareto search (gp_losses/pareto.py)."""

    @property
    def pareto(self) -> Tuple[Objective, ...]:
        """The objectives of a Pareto search (two or more), else ()."""
        return self.objectives if len(self.objectives) > 1 else ()

    @property
    def metric(self) -> str:
        if self.objectives:
            return self.objectives[0].metric
        return self.config.task.metric or self.task_cls.metrics[0]

    def make_task(self, device: str = "cpu", split: str = "val", options: Any = None) -> Any:
        """The task on `device`, scoring `split` (`test` in a retrain), with `options` (the
        run's task options by default)."""
        options = self.options if options is None else options
        if split == "val":
            return self.task_cls(options, self.metric, device)
        return self.task_cls(options, self.metric, device, split=split)

    def rung_options(self, rung: int) -> Any:
        """The task options of fidelity rung `rung` (0: the proxy's own)."""
        if rung == 0:
            return self.options
        merged = cfg.merge(dict(self.config.task.options), self.config.fidelity.rungs[rung - 1])
        return cfg.build(self.task_cls.Options, merged, f"fidelity.rungs[{rung - 1}]")


def build_context(config: RunConfig) -> Context:
    task_cls = resolve_task(config.task.name)
    metric = config.task.metric or task_cls.metrics[0]
    if metric not in task_cls.metrics:
        raise ConfigError(f"task.metric: task {task_cls.name!r} has no metric {metric!r}"
                          + did_you_mean(metric, task_cls.metrics)
                          + f"; metrics: {', '.join(task_cls.metrics)}")
    options = cfg.build(task_cls.Options, config.task.options, "task.options")
    task_cls.check_options(options)
    changes = [("retrain.options", config.retrain.options), ("final.options", config.final.options)]
    changes += [(f"fidelity.rungs[{i}]", rung) for i, rung in enumerate(config.fidelity.rungs)]
    for key, changed in changes:  # longer schedules: the same options, some changed
        if changed:
            task_cls.check_options(cfg.build(task_cls.Options, cfg.merge(config.task.options, changed), key))
    unknown = [name for name in config.retrain.baselines if name not in task_cls.baselines]
    if config.retrain.baselines == ("none",):  # the found losses alone
        unknown = []
    if unknown:
        raise ConfigError(f"retrain.baselines: task {task_cls.name!r} has no baseline {unknown[0]!r}"
                          + did_you_mean(unknown[0], list(task_cls.baselines))
                          + f"; baselines: {', '.join(task_cls.baselines)}")
    search = config.search
    if search.branches or search.fixed:
        task_cls = partial_task(task_cls, search.branches, search.fixed)
    if search.depth > search.height_limit:
        raise ConfigError(f"search.depth: {search.depth} is over search.height_limit {search.height_limit}")
    try:
        operators = operator_set(search.operators)
    except InputError as exc:
        raise ConfigError(f"search.operators: {exc}") from None
    space = SearchSpace(task_cls.branches, operators, search.depth, search.height_limit,
                        task_cls.python_losses)
    return Context(config, task_cls, options, space, seed_losses(task_cls, space, search.seed_losses),
                   objectives(config, task_cls))


def objectives(config: RunConfig, task_cls: Type[Any]) -> Tuple[Objective, ...]:
    """`search.objectives`, checked (one alone: the one-metric search of that metric)."""
    try:
        chosen = parse_objectives(config.search.objectives, task_cls.metrics)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not chosen:
        return chosen
    first = chosen[0]  # the task's metric, in place of task.metric (a base config's, often)
    if first.weight < 0:
        raise ConfigError(f"search.objectives: {config.search.objectives[0]!r}: the first objective is the "
                          "task's metric, which a search maximizes (its pick, the hall's score, the "
                          "logbook's best); put a metric to maximize first, or leave out ':min'")
    if len(chosen) == 1:
        return chosen
    if config.fidelity.rungs:
        raise ConfigError("search.objectives: several objectives with fidelity.rungs are not supported "
                          "(promotion ranks losses by one score); leave out one of the two")
    return chosen
