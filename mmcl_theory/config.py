"""The one config layer: range checks, typed ``--set`` parsing, sections built from dicts.

Every config of the package (the synthetic models, the learner settings, the digits model, the CLIP
run config) is a frozen dataclass that validates itself with these functions, and every CLI parses
its ``KEY=VALUE`` overrides with :func:`parse_override`, which knows each field's declared type:

    bool    true / false (also 1 / 0, yes / no; any case); anything else is an error, never a string
    int     an integer literal (1e3 is not an int)
    float   a finite number (nan and inf are refused)
    str     the text as written (surrounding quotes removed)
    tuple / list   a TOML list, e.g. [0, 0.5, 1] or ["a", "b"]
    dict    a TOML inline table, e.g. {a = 1}

A bad value raises :class:`ConfigError` (a ValueError) naming the field, the value and what is
allowed; the CLIs print it as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tomllib
import typing
from typing import Any, Sequence


class ConfigError(ValueError):
    """A bad config field, value or override: one line naming the field, the value and what is allowed."""


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for bools."""
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__.startswith("int")


def is_number(value: Any) -> bool:
    """True for ints and floats (Python or numpy), False for bools and strings."""
    return not isinstance(value, (bool, str)) and isinstance(value, (int, float)) or type(value).__name__.startswith(("int", "float"))


def check_range(owner: str, field: str, value: Any, low: float, high: float, *, integer: bool = False,
                open_low: bool = False, open_high: bool = False) -> None:
    """Raise ConfigError unless low <= value <= high (low < value with open_low, value < high with open_high),
    finite, and an int if asked.

    Traced or stacked values (jax arrays inside jit/vmap) are not checked: they were checked when
    the concrete config was built.
    """
    name = f"{owner}.{field}" if owner else field
    left, right = "(" if open_low else "[", ")" if open_high else "]"
    allowed = f"{'an integer' if integer else 'a finite number'} in {left}{low}, {high}{right}"
    if integer and not is_int(value):
        raise ConfigError(f"{name} = {value!r} is not allowed: {allowed}")
    if not is_number(value):
        if isinstance(value, (bool, str)) or value is None:
            raise ConfigError(f"{name} = {value!r} is not allowed: {allowed}")
        return  # a jax tracer or array
    v = float(value)
    if not math.isfinite(v) or v < low or v > high or (open_low and v == low) or (open_high and v == high):
        raise ConfigError(f"{name} = {value!r} is out of range: allowed {allowed}")


def check_choice(owner: str, field: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise ConfigError unless value is one of `allowed`."""
    if value not in allowed:
        name = f"{owner}.{field}" if owner else field
        raise ConfigError(f"{name} = {value!r} is not allowed: one of {', '.join(map(str, allowed))}")


def as_floats(config: Any, fields: Sequence[str]) -> None:
    """Store integer values of float fields of a frozen dataclass as floats (so r=1 samples like r=1.0)."""
    for f in fields:
        value = getattr(config, f)
        if isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, f, float(value))


# ------------------------------------------------------------------ typed parsing


def field_types(cls: type) -> dict[str, Any]:
    """{field name: declared type} of a dataclass, with string annotations resolved."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _base_type(kind: Any) -> Any:
    """bool, int, float, str, tuple, list, dict or Any from an annotation (Optional / unions unwrapped)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else Any
    if origin in (tuple, list, dict):
        return origin
    return kind


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def parse_value(name: str, text: str, kind: Any = Any) -> Any:
    """Parse the text of a ``--set name=text`` for a field of declared type `kind` (see module doc)."""
    text = text.strip()
    base = _base_type(kind)
    if base is bool:
        if text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        raise ConfigError(f"{name} = {text!r} is not allowed: true or false")
    if base is str:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        return text
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if base is Any:
            return text
        value = text
    if base is int:
        if not is_int(value):
            raise ConfigError(f"{name} = {text!r} is not allowed: an integer")
    elif base is float:
        if not is_number(value) or not math.isfinite(float(value)):
            raise ConfigError(f"{name} = {text!r} is not allowed: a finite number")
        value = float(value)
    elif base in (tuple, list):
        if not isinstance(value, list):
            raise ConfigError(f"{name} = {text!r} is not allowed: a list such as [1, 2]")
        value = base(value)
    elif base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} = {text!r} is not allowed: a table such as {{a = 1}}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {text!r} is not allowed: a finite number")
    return value


def split_override(item: str, option: str = "--set") -> tuple[str, str]:
    """'key=value' -> ('key', 'value'); anything else is a ConfigError naming `option`, the flag it was given to."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} {item!r} must look like KEY=VALUE")
    return key.strip(), value.strip()


def parse_override(item: str, types: dict[str, Any], owner: str = "") -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` against {field: type}; an unknown key lists the valid ones."""
    key, text = split_override(item)
    if key not in types:
        where = f" for {owner}" if owner else ""
        raise ConfigError(f"unknown --set key {key!r}{where}: valid keys are {', '.join(types)}")
    return key, parse_value(key, text, types[key])


def check_types(owner: str, cls: type, values: dict) -> None:
    """Check the Python types of values read from TOML against the dataclass's declared types."""
    types = field_types(cls)
    for key, value in values.items():
        base = _base_type(types.get(key, Any))
        name = f"{owner}.{key}" if owner else key
        ok = {bool: lambda v: isinstance(v, bool), int: is_int, float: is_number, str: lambda v: isinstance(v, str),
              tuple: lambda v: isinstance(v, (list, tuple)), list: lambda v: isinstance(v, (list, tuple)),
              dict: lambda v: isinstance(v, dict)}.get(base, lambda v: True)
        if not ok(value):
            kind = getattr(base, "__name__", str(base))
            raise ConfigError(f"{name} = {value!r} is not allowed: a {kind}")


def section_from_dict(cls: type, raw: Any, owner: str) -> Any:
    """Build dataclass `cls` from a dict read from TOML: unknown keys and wrong types are ConfigErrors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{owner}] = {raw!r} is not allowed: a table")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(f'{owner}.{k}' for k in unknown)}: allowed {', '.join(valid)}")
    check_types(owner, cls, raw)
    return cls(**raw)


# ------------------------------------------------------------------ command lines


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error convention: a usage error is one line on stderr, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def option_type(name: str, kind: Any, low: float | None = None, high: float | None = None):
    """An argparse ``type=`` parsing with :func:`parse_value` (and :func:`check_range` when low and high
    are given), whose error is the one line of the ConfigError."""

    def parse(text: str) -> Any:
        try:
            value = parse_value(name, text, kind)
            if low is not None and high is not None:
                check_range("", name, value, low, high, integer=kind is int)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def path_type(name: str):
    """An argparse ``type=`` for a path option (a folder or a file), whose error is one line: '' (or blanks) is
    refused rather than silently taken for the working folder. Returns a pathlib.Path."""
    import pathlib  # here, not at the top: an import there enters the source hash of every model's numbers

    def parse(text: str) -> pathlib.Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not allowed: a path ('.' for the working folder)")
        return pathlib.Path(text)

    parse.__name__ = "path"
    return parse


def output_file_type(name: str):
    """An argparse ``type=`` for the path of a file to write, whose error is one line: '' (which would mean the
    working folder), an existing folder, and a path under a file (the write would fail with a bare 'File exists'
    naming the output file, not the file in its way) are refused. Returns the text unchanged."""

    import pathlib  # here, not at the top: an import there enters the source hash of every model's numbers

    def parse(text: str) -> str:
        path = pathlib.Path(text)
        if not text.strip() or path.is_dir():
            raise argparse.ArgumentTypeError(f"{name} {text!r} is not allowed: the path of a file to write")
        above = next(d for d in path.absolute().parents if d.exists())
        if not above.is_dir():
            raise argparse.ArgumentTypeError(f"{name} {text!r}: {above} is a file, not a folder")
        return text

    parse.__name__ = "path"
    return parse
