"""Run configuration: nested frozen dataclasses loaded from YAML and validated up front.

Every error is found before any work starts and names the dotted key, the value, what was
expected and the nearest valid key. Unknown and duplicate keys are errors. `--set a.b=v`
overrides a key (v is read as YAML: `--set search.rejection=false`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from gp_losses.errors import InputError, did_you_mean


class ConfigError(InputError):
    """A configuration value or key that is wrong; the message names its dotted key."""


def _range(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
           choices: Optional[Sequence[Any]] = None, help: str = "") -> Dict[str, Any]:
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "help": help}


@dataclass(frozen=True)
class TaskConfig:
    name: str = ""
    metric: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Task-specific settings, validated against the task's `Options` dataclass."""


@dataclass(frozen=True)
class SearchConfig:
    """Aging evolution (paper section 3.2 and Appendix A)."""

    population_init: int = field(default=20, metadata=_range(1, help="K, random initial losses"))
    tournament: float = field(default=0.05, metadata=_range(0, 1, lo_open=True, help="T, tournament ratio"))
    population_max: int = field(default=2500, metadata=_range(2, help="P, most recent losses kept"))
    evaluations: int = field(default=500, metadata=_range(1, help="N, proxy evaluations to run"))
    batch: int = field(default=0, metadata=_range(0, help="offspring per batch; 0 = number of workers"))
    depth: int = field(default=3, metadata=_range(1, 17, help="D, depth of random losses"))
    height_limit: int = field(default=17, metadata=_range(1, 90))
    operators: Tuple[str, ...] = ()
    """Extra operators, `package.module:NAME`, added to Table 1."""
    rejection: bool = True
    equivalence: bool = True
    stop_invalid: bool = True
    chunk: int = field(default=16, metadata=_range(1, help="candidates per slot per rejection round"))
    compare_baselines: bool = True
    """After the search, train the task's baselines with the best loss's seed, for comparison."""
    max_attempts: int = field(default=200_000, metadata=_range(1, help="raw candidates per slot before giving up"))


@dataclass(frozen=True)
class ProtocolConfig:
    """Loss-rejection protocol (Eq. 5-6, Appendix A)."""

    samples: int = field(default=5, metadata=_range(1, help="B, probe samples"))
    eta: float = field(default=0.6, metadata=_range(help="rejection threshold on the gain"))
    lr: float = field(default=1e-3, metadata=_range(0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0, 1))
    steps: int = field(default=500, metadata=_range(1))
    early_exit: bool = False
    """Accept at the first check where the gain reaches eta. Not exact: measured to agree on
    digits and segmentation probes, to disagree on pose heatmaps (docs/performance.md)."""
    check_every: int = field(default=25, metadata=_range(1))
    reject_step: int = field(default=0, metadata=_range(0, help="0: off"))
    """Reject as low_gain at this step when the gain is still below `reject_gain`. Not exact:
    measured on pose probes in docs/performance.md (bench/protocol_steps.py)."""
    reject_gain: float = 0.1
    reject_monotone: bool = True
    """Reject a passing candidate whose gradient has one sign at every probe entry, at the
    first and at the last step (not in the paper; docs/engine.md)."""
    reject_unbounded: bool = True
    """Reject a passing candidate whose loss keeps falling, without levelling off, along the
    direction the protocol moved the predictions (not in the paper; docs/engine.md)."""
    timeout_s: float = field(default=120.0, metadata=_range(0, lo_open=True, help="per candidate"))
    seed: int = field(default=0, metadata=_range(help="seed of the probe samples and network"))


@dataclass(frozen=True)
class ProxyConfig:
    """Proxy evaluation: where and how long a candidate trains."""

    timeout_s: float = field(default=600.0, metadata=_range(0, lo_open=True))
    device: str = field(default="auto", metadata=_range(choices=("auto", "cpu", "cuda")))
    threads: int = field(default=1, metadata=_range(1, help="torch threads per worker"))


@dataclass(frozen=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
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


def read_yaml(path: Path) -> Dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _convert(value: Any, hint: Any, key: str) -> Any:
    """`value` checked and converted to the type `hint`; ConfigError names `key`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "an integer"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        expected = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    elif origin is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        expected = "a list of strings"
    elif origin in (collections.abc.Mapping, dict) or hint is dict:
        if isinstance(value, dict):
            return dict(value)
        expected = "a mapping"
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"unsupported config type {hint!r} at {key}")
    raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if not meta:
        return
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}"
                          + did_you_mean(str(value), [str(c) for c in choices]))
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        bound = f"> {lo}" if meta.get("lo_open") else f">= {lo}"
        raise ConfigError(f"{key}: expected a value {bound}{' and <= ' + str(hi) if hi is not None else ''}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: expected a value <= {hi}, got {value!r}")


def build(cls: Any, data: Any, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping; every key checked."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            siblings = [f"{prefix}.{name}" if prefix else name for name in fields]
            raise ConfigError(f"unknown config key {dotted!r}" + did_you_mean(dotted, siblings)
                              + f"; valid keys here: {', '.join(fields)}")
        converted = _convert(value, hints[key], dotted)
        _check_range(converted, fields[key].metadata, dotted)
        kwargs[key] = converted
    return cls(**kwargs)


def to_dict(config: Any) -> Dict[str, Any]:
    """Plain data (lists, dicts, scalars) for YAML and for shipping to workers."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(config)


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply `a.b=v` overrides to raw config data (v parsed as YAML)."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep or not path.strip():
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set search.evaluations=30")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
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
    """A validated RunConfig: `defaults`, then the YAML file, then `--set` overrides."""
    data: Dict[str, Any] = _merge({}, defaults or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    return build(RunConfig, apply_overrides(data, overrides))


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
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


__all__ = ["RunConfig", "TaskConfig", "SearchConfig", "ProtocolConfig", "ProxyConfig", "ConfigError",
           "load", "build", "to_dict", "dump", "apply_overrides", "read_yaml", "replace"]
