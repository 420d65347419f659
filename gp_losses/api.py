"""The Python API: a search from a notebook or a sweep script, with objects.

    import gp_losses
    result = gp_losses.search(Digits, evaluations=30)      # a Task subclass, instance or name
    result.pick                                            # the hall-of-fame entry the search chose
    criterion = result.export()                            # FoundLoss(), a torch.nn.Module
    result.retrain(seeds=3)                                # held-out data, over seeds
    again = gp_losses.load_run(result.run_dir)

`search` runs serially in this process (`workers=1`) or starts SCOOP with `workers` processes
for the user. Keyword arguments override config keys: `evaluations=30` and `seed=1` are
`search.evaluations` and `seed`, `metric="miou"` is `task.metric`, `seed_losses=["ce"]` is
`search.seed_losses`, `objectives=["miou", "bf1"]` is `search.objectives`; any other key is a config
path with `__` for its dots (`proxy__timeout_s=60`) or a section with a dict
(`search={"evaluations": 30}`).

A task class defined where a fresh interpreter cannot import it (a notebook, a script's
`__main__`) searches in this process only (`proxy.isolate: false`, one worker); define it in a
module to get sandboxes and SCOOP workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from gp_losses.contract import Task
from gp_losses.core.errors import GpLossesError, InputError, RunFailed

log = logging.getLogger("gp_losses")

SHORT = {"evaluations": "search.evaluations", "seed": "seed", "metric": "task.metric", "name": "name",
         "seed_losses": "search.seed_losses", "objectives": "search.objectives"}
"""Keyword arguments of `search` that name a config key by a short name."""
_LOCAL: Dict[str, type] = {}
"""Task classes of this process that no fresh interpreter can import, by their names."""


class SearchResult:
    """A search's run directory, read: status, hall of fame, the pick; export and retrain."""

    def __init__(self, run_dir: Union[str, Path]) -> None:
        from gp_losses.rundir import RunDir

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "status.json").is_file():
            raise InputError(f"{str(run_dir)!r} is not a run directory (no status.json)")
        self._run = RunDir(self.run_dir)

    def __repr__(self) -> str:
        pick = self.pick
        best = f", pick {pick['rank']} ({pick['score']:.4f})" if pick else ""
        return f"SearchResult({str(self.run_dir)!r}, {self.status.get('state')}{best})"

    @property
    def status(self) -> Dict[str, Any]:
        """status.json: `state` (finished, interrupted, failed, running, stale) and what the run wrote there."""
        return self._run.owned_status()

    @property
    def hall_of_fame(self) -> List[Dict[str, Any]]:
        """The hall of fame, best first: rank, score, metrics, expr and formula per entry."""
        return self._run.hall_of_fame()

    @property
    def final(self) -> Dict[str, Any]:
        """final.json: the finalists trained again on val and the pick ({} without a final stage)."""
        return self._run.read_json("final.json", {})

    @property
    def baselines(self) -> Dict[str, Any]:
        return self._run.read_json("baselines.json", {})

    @property
    def noise(self) -> Dict[str, Any]:
        """noise.json: the best loss over further proxy seeds, its mean and std ({} without
        `search.noise_seeds`)."""
        return self._run.read_json("noise.json", {})

    @property
    def pick(self) -> Optional[Dict[str, Any]]:
        """The search's result: final.json's pick where it chose among finalists, else rank 1."""
        from gp_losses.rundir import search_pick

        hall = self.hall_of_fame
        return hall[search_pick(self.run_dir) - 1] if hall else None

    def source(self, rank: Optional[int] = None) -> str:
        """The standalone module of a found loss (default: the pick), as `gp-losses export` writes it."""
        from gp_losses.export import run_source

        return run_source(self.run_dir, _rank(rank))

    def export(self, path: Union[str, Path, None] = None, rank: Optional[int] = None, **kwargs: Any) -> Any:
        """A found loss (default: the pick) as a torch.nn.Module, `FoundLoss(**kwargs)`; with
        `path`, its module is written there too."""
        from gp_losses.export import CLASS_NAME, load_source

        text = self.source(rank)
        if path is not None:
            Path(path).write_text(text)
        return load_source(text).__dict__[CLASS_NAME](**kwargs)

    def tree(self, rank: Optional[int] = None) -> Any:
        """A found loss (default: the pick) exactly as the search trained it: for a template
        task, `tree(outputs, target[, weight])` on a batch, the compiled tree on the task's loss
        inputs (the exported FoundLoss computes the same); for another task, the compiled
        tree itself, called on {branch: loss inputs}."""
        from gp_losses.export import run_loss

        context, expr, _ = run_loss(self.run_dir, _rank(rank))
        compiled = context.space.compile(context.space.parse(expr))
        task = context.make_task()
        if hasattr(task, "training_loss"):
            return lambda outputs, *targets: task.training_loss(compiled, outputs, *targets)
        return compiled

    def retrain(self, top: Optional[int] = None, seeds: Optional[int] = None, schedule: Optional[str] = None,
                split: Optional[str] = None, ranks: Any = (), **overrides: Any) -> Dict[str, Any]:
        """`gp-losses retrain` on this run: its best losses and the task's baselines over seeds,
        scored on held-out data; the summary (report in retrain/). `schedule` defaults to
        `long` where the run's config has retrain.options, else `proxy`."""
        from gp_losses import config as cfg
        from gp_losses.jobs import close_sandbox
        from gp_losses.retrain import retrain

        sets = to_overrides(overrides)
        if schedule is None:
            schedule = "long" if cfg.load(self.run_dir / "config.yaml", sets).retrain.options else "proxy"
        try:
            return retrain(str(self.run_dir), top, seeds, schedule, sets, split, tuple(ranks))
        finally:
            close_sandbox()


def _rank(rank: Any) -> Optional[int]:
    """A hall-of-fame rank as given by a user: None (the pick) or an integer (checked by the run)."""
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise InputError(f"rank: expected an integer (a hall-of-fame rank) or None for the pick, got {rank!r}")
    return rank


def load_run(run_dir: Union[str, Path]) -> SearchResult:
    """A finished (or running) search's results from its run directory."""
    return SearchResult(run_dir)


def search(task: Any, config: Union[str, Path, None] = None, out: Union[str, Path, None] = None,
           workers: int = 1, resume: Union[str, Path, None] = None, hostfile: Optional[str] = None,
           **overrides: Any) -> SearchResult:
    """Search a loss for `task` (a Task subclass or instance, or a task name) and return the
    result; `config` a YAML run configuration, `out` the run directory (default
    outputs/<task>-<metric>-<time>), `workers` > 1 starts SCOOP, `resume` continues a run
    (then only `evaluations` may be given). Raises the project's errors (InputError for bad
    input, RunFailed when the run ends failed)."""
    from gp_losses import cluster

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"workers: expected an integer >= 1, got {workers!r}")
    sets = to_overrides(overrides)
    name, local = _task_name(task) if task is not None else (None, False)
    if task is not None and not isinstance(task, (str, type)) and not resume:
        sets = _instance_overrides(task) + sets
    if local:
        if workers > 1 or hostfile:
            raise InputError(f"task {name!r} is defined where a fresh interpreter cannot import it "
                             "(a notebook or a script's __main__): define it in a module to search "
                             "with workers > 1, or use workers=1")
        sets = ["proxy.isolate=false"] + sets
        log.info("task %s is local to this process: searching in-process (proxy.isolate: false)", name)
    if workers == 1 and not hostfile or cluster.running():
        return _search_here(name, config, out, resume, sets)
    return _search_scoop(name, config, out, resume, sets, workers, hostfile)


def _search_here(name, config, out, resume, sets) -> SearchResult:
    from gp_losses.driver import run_search

    evaluations, sets = _resume_evaluations(resume, sets)
    summary = run_search(name, str(config) if config else None, str(out) if out else None,
                         None, evaluations, str(resume) if resume else None, sets)
    return SearchResult(summary["run_dir"])


def _search_scoop(name, config, out, resume, sets, workers, hostfile) -> SearchResult:
    from gp_losses.driver import search_under_scoop

    evaluations, sets = _resume_evaluations(resume, sets)
    count = workers if workers > 1 or not hostfile else None  # a hostfile alone: its counts
    return SearchResult(search_under_scoop(name, config, out, resume, evaluations, sets, (), count, hostfile,
                                           quiet=True))


def to_overrides(overrides: Mapping[str, Any]) -> List[str]:
    """`--set` items from keyword arguments (SHORT names, `a__b` paths, {section: {...}})."""
    items: List[str] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                add(f"{key}.{sub}", inner)
        else:
            items.append(f"{key}={_yaml(value, key)}")

    for key, value in overrides.items():
        add(SHORT.get(key, key.replace("__", ".")), value)
    return items


def _yaml(value: Any, key: str = "") -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml(v, key) for v in value) + "]"
    if isinstance(value, Mapping):  # inside a list: fidelity={"rungs": [{"iterations": 900}]}
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_yaml(v, key)}" for k, v in value.items()) + "}"
    if isinstance(value, Path):
        value = str(value)
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise InputError(f"{key or 'override'}: {value!r} is not a config value (a number, string, "
                         "boolean, list or mapping of them)")
    return json.dumps(value)  # JSON scalars are YAML; a string stays a string


def _resume_evaluations(resume, sets: List[str]):
    """(evaluations, other overrides): with `resume` only search.evaluations may be given."""
    if not resume:
        return None, sets
    evaluations = None
    rest = []
    for item in sets:
        key, _, value = item.partition("=")
        if key == "search.evaluations":
            evaluations = int(json.loads(value))
        elif key != "proxy.isolate":
            rest.append(item)
    if rest:
        raise InputError(f"resume: a resumed run keeps its own config.yaml; only evaluations may be "
                         f"given, got {', '.join(rest)}")
    return evaluations, []


def _task_name(task: Any) -> tuple:
    """(the name the engine finds `task` by, whether it is local to this process)."""
    if isinstance(task, str):
        return task, task in _LOCAL
    cls = task if isinstance(task, type) else type(task)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise InputError(f"task: expected a gp_losses.contract.Task subclass or instance, or a task name; "
                         f"got {task!r}")
    path = importable_path(cls)
    if path:
        return path, False
    from tasks import TASKS

    name = f"{cls.__module__}:{cls.__qualname__}"
    if _LOCAL.get(name) is not cls:
        _LOCAL[name] = cls
        TASKS.register_local(name, cls)
    return name, True


def importable_path(cls: type) -> Optional[str]:
    """`module:NAME` by which a fresh interpreter (a sandbox, a SCOOP worker) finds `cls`, or
    None: defined in `__main__` or a notebook, or not a module-level name."""
    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__ == "__main__" or not getattr(module, "__file__", None):
        return None
    if getattr(module, cls.__qualname__, None) is cls:
        return f"{cls.__module__}:{cls.__qualname__}"
    for attr, value in vars(module).items():
        if value is cls and not attr.startswith("_"):
            return f"{cls.__module__}:{attr}"
    return None


def _instance_overrides(task: Any) -> List[str]:
    """A task instance's options and metric as config overrides: those that differ from the
    class's defaults, so that a config file's own keys stand where the instance left them."""
    items = []
    options = getattr(task, "options", None)
    if dataclasses.is_dataclass(options):
        defaults = type(options)()
        for f in dataclasses.fields(options):
            value = getattr(options, f.name)
            if value != getattr(defaults, f.name):
                items.append(f"task.options.{f.name}={_yaml(value)}")
    metric = getattr(task, "metric", None)
    if metric and metric != (type(task).metrics or (None,))[0]:
        items.append(f"task.metric={_yaml(metric)}")
    ignored = [f"{attr}={getattr(task, attr)!r}" for attr, default in (("device", "cpu"), ("split", "val"))
               if getattr(task, attr, default) != default]
    if ignored:
        log.warning("task instance: %s not taken (the run's proxy.device and the search's val split "
                    "decide)", ", ".join(ignored))
    return items


__all__ = ["SearchResult", "load_run", "search", "GpLossesError"]
