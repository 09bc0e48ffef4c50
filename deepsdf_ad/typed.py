"""Plain mappings (YAML, ``--set``, a latent source's ``kwargs``) to typed dataclasses: each value checked
against its field's annotation, unknown keys refused with the known ones listed. The one converter of the
config tree and of every options dataclass, so the checks live in one place."""

from __future__ import annotations

import dataclasses
import types
import typing


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what is allowed."""


def _convert(tp, value, key: str):
    """Convert a YAML value to the annotated type ``tp`` (dataclass, tuple, list, Optional, scalar)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (elem, *_rest) = typing.get_args(tp)
        return tuple(_convert(elem, v, key) for v in value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (elem,) = typing.get_args(tp) or (object,)
        return [_convert(elem, v, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, allowed))}, got "
                              f"{value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            where = f"in '{prefix}'" if prefix else "at the top level"
            raise ConfigError(f"unknown config key '{key}'; known {where}: {', '.join(names)}")
        kwargs[k] = _convert(hints[k], v, key)
    return cls(**kwargs)
