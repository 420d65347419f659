"""Run configuration: nested frozen dataclasses loaded from YAML and validated up front.

Every error is found before any work starts and names the dotted key, the value, what was
expected and the nearest valid key. Unknown and duplicate keys are errors. `--set a.b=v`
overrides a key (v is read as YAML: `--set search.rejection=false`). Numbers are read as YAML
1.2 reads them: `1e-3` and `1E4` are numbers (PyYAML's YAML 1.1 resolver reads them as strings).

A run's configuration is layered: the dataclass defaults below, then the task's own defaults
(`runs/<task>.yaml`), then a `--config` file, then `--set` overrides; each layer names only
the keys it changes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from gp_losses.core.options import ConfigError, build, option, to_dict


@dataclass(frozen=True)
class TaskConfig:
    name: str = ""
    metric: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Task-specific settings, validated against the task's `Options` dataclass."""


@dataclass(frozen=True)
class SearchConfig:
    """Aging evolution (paper section 3.2 and Appendix A)."""

    population_init: int = option(20, 1, help="K, random initial losses")
    tournament: float = option(0.05, 0, 1, lo_open=True, help="T, tournament ratio")
    population_max: int = option(2500, 2, help="P, most recent losses kept")
    evaluations: int = option(500, 1, help="N, proxy evaluations to run")
    batch: int = option(0, 0, help="offspring per batch; 0 = number of workers")
    depth: int = option(3, 1, 17, help="D, depth of random losses")
    height_limit: int = option(17, 1, 90)
    operators: Tuple[str, ...] = ()
    """Extra operators, `package.module:NAME`, added to Table 1."""
    branches: Tuple[str, ...] = ()
    """The loss branches searched; () = all. The others are trained with `fixed`'s, unchanged
    (paper Table 4: the two Fast R-CNN branches searched, the RPN's at CE and L1)."""
    fixed: str = ""
    """The baseline whose losses the branches left out of `branches` take; "": the task's first."""
    rejection: bool = True
    equivalence: bool = True
    stop_invalid: bool = True
    chunk: int = option(1024, 1, help="most candidates of one slot's branch in one rejection job")
    round_s: float = option(0.5, 0, lo_open=True, help="seconds of rejection work in one job (its time box)")
    """How long a worker checks candidates before it reports back and gets new ranges: the
    longer, the fewer round trips; the shorter, the less speculative work (gp_losses/streams.py)."""
    seed_losses: Tuple[str, ...] = ()
    """Warm start (not in the paper, which starts from scratch, as the default does): losses put
    in the initial population before its random ones, each trained like any offspring and
    marked `seeded` in evaluations.jsonl and the hall of fame. Each is a baseline name of the
    task (`ce`) or an expression; for a multi-branch task, `BRANCH=EXPR|BASELINE` parts joined
    by `;` (branches not named take the task's first baseline), as `--loss` takes them."""
    objectives: Tuple[str, ...] = ()
    """Several metrics in one search (not in the paper): metrics of the task, each `name` or
    `name:max` (higher is better) or `name:min`; selection by Pareto front and crowding
    distance, the hall of fame the Pareto front (gp_losses/pareto.py). The first, a metric to
    maximize, is the task's metric in place of task.metric. () or one metric: the one-metric
    search."""
    compare_baselines: bool = True
    """After the search, train the task's baselines with the best loss's seed, for comparison."""
    noise_seeds: int = option(0, 0, help="further seeds of the best loss, at its rung; 0: off")
    """Noise accounting (not in the paper): after the search the hall's first is trained again
    with this many further seeds on the proxy; the spread of its scores, the first included, is
    the proxy's noise (noise.json), shown beside the hall of fame so that a gap smaller than it
    is read as a tie."""
    max_attempts: int = option(200_000, 1, help="raw candidates per slot before giving up")
    max_failed_share: float = option(0.5, 0, 1, help="share of failed jobs that stops the run")
    """The run stops as `failed` when more than this share of the last `failure_window` proxy
    evaluations (or of the last `failure_window` protocol runs) ended `error` or `timeout`:
    a task that cannot train is reported with its most frequent error instead of searching on."""
    failure_window: int = option(20, 1, help="jobs the failed share is measured over")
    max_seconds: float = option(0.0, 0, help="stop after this much wall time; 0: no limit")
    """A time budget: the search ends (finished) after the first batch that brings its wall
    time, counted over resumes, to this many seconds, whatever `evaluations` says."""
    plot: bool = True
    """Draw progress.png in the run directory as the search goes (matplotlib)."""
    tensorboard: bool = False
    """Write TensorBoard events in RUN/tensorboard/: the logbook's rows per batch, the hall of
    fame at the end, a retrain's means per loss (gp_losses/tracking.py; needs the tensorboard
    package, the `tensorboard` extra)."""


@dataclass(frozen=True)
class ProtocolConfig:
    """Loss-rejection protocol (Eq. 5-6, Appendix A)."""

    samples: int = option(5, 1, help="B, probe samples")
    eta: float = option(0.6, help="rejection threshold on the gain")
    relative_gain: bool = False
    """Measure the gain as a share of the room left, g / mean(1 - metric(initial outputs)),
    not in the metric's own units (Eq. 5). Not in the paper: for a branch whose initial
    outputs already score well (detection's box branches, whose positive proposals overlap
    their boxes by IoU 0.5 or more), where no loss could gain eta in absolute terms."""
    lr: float = option(1e-3, 0, lo_open=True)
    momentum: float = option(0.9, 0, 1)
    steps: int = option(500, 1)
    early_exit: bool = False
    """Accept at the first check where the gain reaches eta. Not exact: measured to agree on
    digits and segmentation probes, to disagree on pose heatmaps (docs/performance.md)."""
    check_every: int = option(25, 1)
    reject_step: int = option(0, 0, help="0: off")
    """Reject as low_gain at this step when the gain is still below `reject_gain`. Not exact:
    measured on pose probes in docs/performance.md (bench/protocol_steps.py)."""
    reject_gain: float = 0.1
    reject_monotone: bool = True
    """Reject a passing candidate whose gradient has one sign at every probe entry, at the
    first and at the last step (not in the paper; docs/engine.md)."""
    reject_unbounded: bool = True
    """Reject a passing candidate whose loss keeps falling, without levelling off, along the
    direction the protocol moved the predictions (not in the paper; docs/engine.md)."""
    timeout_s: float = option(120.0, 0, lo_open=True, help="per candidate")
    seed: int = option(0, help="seed of the probe samples and network")


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy evaluation: where and how long a candidate trains."""

    timeout_s: float = option(600.0, 0, lo_open=True)
    device: str = option("auto", choices=("auto", "cpu", "cuda"))
    threads: int = option(1, 1, help="torch threads per worker")
    isolate: bool = True
    """Run each worker's jobs in a child process of its own, so that a job which crashes its
    process costs only that job. false runs them in the worker itself: a faster start and
    easier debugging (pdb, profilers), but a crash or a hang in C code ends the worker."""
    retries: int = option(1, 0, help="reruns of a job whose process died")
    """A job whose process dies (a segfault, os._exit, an out-of-memory kill) is run again in a
    fresh process this many times; then it is recorded as `error` ("process died: ...")."""
    setup_timeout_s: float = option(1800.0, 0, lo_open=True, help="the longest a worker's task setup takes")
    """Under SCOOP, a worker that has not set the task up within this (plus 30 s) when a run
    starts is taken as lost, as one that does not answer a job (docs/multi-node.md)."""


@dataclass(frozen=True)
class RetrainConfig:
    """`gp-losses retrain`: the best losses and the task's baselines trained again from scratch
    over seeds and scored on the task's test split (the paper's re-training)."""

    top: int = option(3, 1, help="hall-of-fame losses retrained")
    seeds: int = option(3, 1, help="training seeds per loss")
    options: Mapping[str, Any] = field(default_factory=dict)
    """Task options of the `long` schedule, over the search's own (the paper retrains about
    10x longer than its proxy); `--schedule proxy` keeps the search's options."""
    timeout_s: float = option(3600.0, 0, lo_open=True, help="per training")
    baselines: Tuple[str, ...] = ()
    """The task's baselines retrained beside the found losses, by name; empty: all of them;
    `[none]`: none (the found losses alone, compared with baselines retrained elsewhere)."""
    losses: Mapping[str, str] = field(default_factory=dict)
    """Given losses retrained beside them with the same seeds and schedule, a published one for
    example: name -> expression (`BRANCH=EXPR; ...` on a multi-branch task, the branches not
    given taking the task's first baseline), e.g. `--set retrain.losses.paper='Add(...)'`."""


@dataclass(frozen=True)
class FinalConfig:
    """After the search: the top K hall-of-fame losses trained again on the val split with the
    `options` (longer training), S seeds each; the highest mean is the search's pick, which
    `gp-losses export` writes by default (final.json, final.md). Not in the paper, which takes
    the hall's first: that score is the best of many short noisy runs, so the near-tied top
    losses are ordered partly by chance, and a short proxy can rank a loss that falls behind
    with longer training above one that does not (docs/engine.md). The test split stays unseen."""

    top: int = option(0, 0, help="finalists; 0: off, the hall's first is the pick")
    seeds: int = option(1, 1, help="training seeds per finalist")
    options: Mapping[str, Any] = field(default_factory=dict)
    """Task options of the finalists' trainings, over the search's own (e.g. iterations)."""
    timeout_s: float = option(1800.0, 0, lo_open=True, help="per training")


@dataclass(frozen=True)
class FidelityConfig:
    """Multi-fidelity evaluation inside aging evolution (not in the paper, which trains every
    loss once on its proxy; gp_losses/fidelity.py). Each rung above the proxy is a longer
    schedule, its task options over the proxy's (`rungs: [{iterations: 3000}]`). Between
    batches, as asynchronous successive halving (ASHA) does, a loss among the best `promote`
    share of the losses scored at a rung is trained at the next one, `seeds` times; selection
    compares two losses at the highest rung both reached, and the hall of fame ranks a loss
    scored at a higher rung above any scored only lower, each entry saying its rung. No rungs
    (the default): every loss is trained once on the proxy, as the paper does."""

    rungs: Tuple[Mapping[str, Any], ...] = ()
    promote: float = option(1 / 3, 0, 1, lo_open=True, help="share of a rung's losses promoted (ASHA's 1/eta)")
    seeds: int = option(1, 1, help="trainings of a promoted loss at each rung, their mean its score")
    timeout_s: float = option(1800.0, 0, lo_open=True, help="per training above the proxy")


@dataclass(frozen=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    seed: int = 0
    name: str = ""


# ---------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a mapping with the same key twice."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}; "
                              f"first at line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 floats: PyYAML's 1.1 resolver wants a dot in the mantissa and reads 1e-3 as a string
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """YAML text as data: safe, duplicate keys refused, YAML 1.2 numbers."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply `a.b=v` overrides to raw config data (v parsed as YAML)."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set search.evaluations=30")
        try:
            value = parse_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = data
        keys = path.strip().split(".")
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load(path: Optional[Path] = None, overrides: Sequence[str] = (),
         defaults: Optional[Mapping[str, Any]] = None) -> RunConfig:
    """A validated RunConfig: the dataclass defaults, then `defaults` (a task's own), then
    the YAML file, then `--set` overrides."""
    data: Dict[str, Any] = merge({}, defaults or {})
    if path is not None:
        data = merge(data, read_yaml(path))
    return build(RunConfig, apply_overrides(data, overrides))


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    """`base` with `top` laid over it, section by section."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def dump(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def replace(config: RunConfig, **sections: Mapping[str, Any]) -> RunConfig:
    """A copy with some fields of some sections replaced: replace(cfg, search={...})."""
    changes: Dict[str, Any] = {}
    for name, values in sections.items():
        current = getattr(config, name)
        changes[name] = dataclasses.replace(current, **values) if dataclasses.is_dataclass(current) else values
    return dataclasses.replace(config, **changes)


__all__ = ["RunConfig", "TaskConfig", "SearchConfig", "ProtocolConfig", "ProxyConfig", "FidelityConfig", "ConfigError",
           "option", "load", "merge", "build", "to_dict", "dump", "apply_overrides", "read_yaml", "parse_yaml",
           "replace"]
