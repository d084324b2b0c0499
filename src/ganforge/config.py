"""Typed configs, generic over any dataclass: `key=value` overrides, validation, JSON, versions.

A config is a dataclass deriving from :class:`Config` whose fields are declared with :func:`option`:
the default, one line of help, and the field's limits or choices (a tuple, or a
:class:`~ganforge.registry.Registry` whose names are then the valid values). Types come from the
class's real type hints. Everything here works for any such class (the GAN trainer's `GANConfig`,
the detector's `DetectConfig`), so a rule is written once:

    cfg = apply_overrides(recipe_config, ["g_lr=1e-4", "batch_size=64"])   # parse + validate
    data = cfg.to_dict(); same = type(cfg).from_dict(data)                  # JSON round trip

Unknown keys and bad values fail with one line that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from typing import Any, ClassVar, TypeVar

from ganforge.errors import ConfigError
from ganforge.registry import Registry

C = TypeVar("C", bound="Config")
Choices = tuple | Registry | Callable[[], Iterable[str]]


def option(default: Any, help: str, *, choices: Choices | None = None, ge: float | None = None,
           gt: float | None = None, lt: float | None = None, le: float | None = None,
           resume: bool = False) -> Any:
    """A config field: its default, one line of help, and what values are valid.

    `choices` may be a tuple, a Registry (valid values are its names) or a function returning them.
    `ge`/`gt`/`lt`/`le` bound a number (None values are allowed where the type allows None).
    `resume=True` marks a key that a resumed run may change, because it steers or records the run
    without changing what the run is (a learning rate, a cadence, the device)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "lt": lt, "le": le, "resume": resume}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Config:
    """Base of ganforge's config dataclasses. `VERSION` is the format version a subclass writes;
    `check()` holds rules that involve several fields."""

    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples become lists, as in JSON

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def check(self) -> None:
        """Cross-field rules (subclasses); raise ConfigError with one line."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild a config saved by `to_dict`, refusing newer formats and unknown keys."""
        if not isinstance(data, dict):
            raise ConfigError(f"a saved config must be a JSON object, got {type(data).__name__}")
        version = data.get("version", cls.VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > cls.VERSION:
            raise ConfigError(f"config format version {version} is newer than this ganforge understands "
                              f"({cls.VERSION}): upgrade ganforge")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"config has unknown keys {', '.join(unknown)}: was it made by another tool?")
        values = {key: coerce(cls, key, value) for key, value in data.items()}
        return validate(cls(**{**values, "version": cls.VERSION}))


# ---- types ----------------------------------------------------------------------------------------

@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The real types of a config's fields (resolved from `from __future__` annotation strings)."""
    return typing.get_type_hints(cls)


def _split_optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), len(args) < len(typing.get_args(kind))
    return kind, False


def type_name(kind: Any) -> str:
    base, optional = _split_optional(kind)
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        inner = [a for a in typing.get_args(base) if a is not Ellipsis]
        name = f"comma-separated {type_name(inner[0]) if inner else 'values'}s"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional else name


def _parse_scalar(kind: Any, text: str) -> Any:
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if kind is int:
        value = float(text)
        if not value.is_integer():
            raise ValueError(text)
        return int(value)
    if kind is float:
        return float(text)
    return text


def parse_value(cls: type, key: str, raw: str) -> Any:
    """A command-line string -> the field's type (bool, int, float, str, optional, tuple, list)."""
    kind = type_hints(cls)[key]
    base, optional = _split_optional(kind)
    text = raw.strip()
    try:
        if optional and text.lower() in ("none", "null", ""):
            return None
        origin = typing.get_origin(base)
        if origin in (tuple, list):
            args = [a for a in typing.get_args(base) if a is not Ellipsis]
            items = [t.strip() for t in text.split(",") if t.strip()]
            if origin is tuple and args and Ellipsis not in typing.get_args(base) and len(items) != len(args):
                raise ValueError(text)
            parsed = [_parse_scalar(args[min(i, len(args) - 1)] if args else str, t) for i, t in enumerate(items)]
            return tuple(parsed) if origin is tuple else parsed
        return _parse_scalar(base, text)
    except ValueError:
        raise ConfigError(f"bad value {key}={raw!r}: expected {type_name(kind)}") from None


def coerce(cls: type, key: str, value: Any) -> Any:
    """A value read from JSON -> the field's type, or a one-line error (JSON has no tuples, and
    its ints stand for floats)."""
    kind = type_hints(cls).get(key, Any)
    base, optional = _split_optional(kind)
    if value is None and optional:
        return None
    origin = typing.get_origin(base)
    ok = True
    if origin in (tuple, list):
        ok = isinstance(value, (list, tuple))
        value = (tuple(value) if origin is tuple else list(value)) if ok else value
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base in (bool, str):
        ok = isinstance(value, base)
    if not ok:
        raise ConfigError(f"bad value {key}={value!r}: expected {type_name(kind)}")
    return value


# ---- overrides and validation ---------------------------------------------------------------------

def keys(cfg_or_cls: Any) -> list[str]:
    """The keys a person may set (every field but the format version)."""
    return [f.name for f in fields(cfg_or_cls) if f.name != "version"]


def split_overrides(overrides: Iterable[str]) -> list[tuple[str, str]]:
    items = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: write key=value (e.g. g_lr=1e-4)")
        key, raw = item.split("=", 1)
        items.append((key.strip(), raw))
    return items


def apply_overrides(cfg: C, overrides: Iterable[str] | dict[str, Any]) -> C:
    """A copy of `cfg` with `key=value` strings (or a dict of typed values) applied, validated."""
    items = list(overrides.items()) if isinstance(overrides, dict) else split_overrides(overrides)
    valid = keys(cfg)
    changes: dict[str, Any] = {}
    for key, raw in items:
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        changes[key] = parse_value(type(cfg), key, raw) if isinstance(raw, str) else raw
    return validate(replace(cfg, **changes))


def choice_names(choices: Choices) -> tuple[str, ...]:
    if isinstance(choices, Registry):
        return choices.names()
    if callable(choices):
        return tuple(choices())
    return tuple(choices)


def _check_number(key: str, value: Any, meta: dict) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    ge, gt, lt, le = meta["ge"], meta["gt"], meta["lt"], meta["le"]
    if not math.isfinite(value) and any(b is not None for b in (ge, gt, lt, le)):
        raise ConfigError(f"bad value {key}={value!r}: must be a finite number")
    if (ge is not None or gt is not None) and (lt is not None or le is not None):
        low, high = (ge if ge is not None else gt), (lt if lt is not None else le)
        inside = ((value >= ge) if ge is not None else (value > gt)) and \
                 ((value < lt) if lt is not None else (value <= le))
        if not inside:
            raise ConfigError(f"bad value {key}={value!r}: must be in {'[' if ge is not None else '('}"
                              f"{low:g}, {high:g}{')' if lt is not None else ']'}")
        return
    if gt == 0 and not value > 0:
        raise ConfigError(f"bad value {key}={value!r}: must be greater than zero")
    if ge == 0 and not value >= 0:
        raise ConfigError(f"bad value {key}={value!r}: must be zero or more")
    for bound, holds, words in ((ge, lambda b: value >= b, "at least"), (gt, lambda b: value > b, "more than"),
                                (le, lambda b: value <= b, "at most"), (lt, lambda b: value < b, "less than")):
        if bound is not None and not holds(bound):
            raise ConfigError(f"bad value {key}={value!r}: must be {words} {bound:g}")


def validate(cfg: C) -> C:
    """Raise ConfigError (one line) for any invalid value; return cfg unchanged otherwise."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        coerce(type(cfg), f.name, value)
        if f.metadata.get("choices") is not None and value is not None:
            valid = choice_names(f.metadata["choices"])
            if value not in valid:
                raise ConfigError(f"bad value {f.name}={value!r}; valid: {', '.join(map(str, valid))}")
        if f.metadata:
            _check_number(f.name, value, f.metadata)
    cfg.check()
    return cfg


# ---- describing a config ----------------------------------------------------------------------------

def resume_keys(cls: type) -> tuple[str, ...]:
    """Keys a resumed run may change (declared with `resume=True`)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("resume"))


def differences(cfg: Config, base: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (value in cfg, value in base)} for every key whose values differ."""
    a, b = cfg.to_dict(), base.to_dict()
    return {k: (a[k], b.get(k)) for k in a if k != "version" and a[k] != b.get(k)}


def describe(cfg: Config) -> list[dict[str, Any]]:
    """Every key with its value, type, help and valid choices: for `ganforge config`."""
    rows = []
    hints = type_hints(type(cfg))
    for f in fields(cfg):
        if f.name == "version":
            continue
        choices = f.metadata.get("choices")
        rows.append({"key": f.name, "value": cfg.to_dict()[f.name], "type": type_name(hints[f.name]),
                     "help": f.metadata.get("help", ""),
                     "choices": list(choice_names(choices)) if choices is not None else None,
                     "resume": bool(f.metadata.get("resume"))})
    return rows
