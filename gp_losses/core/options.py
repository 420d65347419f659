"""Options: frozen dataclasses read from plain data, every value checked with its range.

The run configuration (gp_losses/config.py) and every task's `Options` are such dataclasses;
`option()` declares a field with its valid range or choices, and `build()` makes an instance
from a mapping, refusing unknown keys and wrong values with the dotted key, the value, what
was expected and the nearest valid key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import typing
from dataclasses import field
from typing import Any, Dict, Mapping, Optional, Sequence

from gp_losses.core.errors import InputError, did_you_mean


class ConfigError(InputError):
    """A configuration value or key that is wrong; the message names its dotted key."""


def option(default: Any, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, choices: Optional[Sequence[Any]] = None, help: str = "") -> Any:
    """A dataclass field with its valid range (lo <= value <= hi, value > lo with `lo_open`)
    or its `choices`, checked when a config is loaded. Tasks use it in their `Options`."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open,
                                            "choices": choices, "help": help})


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
        if isinstance(value, float) and value.is_integer():  # 1E4, 1e3
            return int(value)
        expected = "an integer"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        expected = "a finite number"
    elif hint is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    elif origin is tuple and typing.get_origin(typing.get_args(hint)[0]) in (collections.abc.Mapping, dict):
        if isinstance(value, (list, tuple)) and all(isinstance(v, dict) for v in value):
            return tuple(dict(v) for v in value)
        expected = "a list of mappings"
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


