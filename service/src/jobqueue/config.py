"""Settings from a TOML file with every key overridable by an environment variable.

Each part declares its settings as a frozen dataclass; `load_settings` fills it from
the file, then from `<PREFIX><KEY>` environment variables, converting each value to
the field's type so that a wrong value fails at start-up with a message naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong kind."""


def _convert(name: str, value: Any, annotation: Any) -> Any:
    """Convert a file or environment value to the field's declared type."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None or value == "":
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"setting {name!r}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"setting {name!r}: expected a number, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"setting {name!r}: expected {annotation.__name__}, got {value!r}"
            ) from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"setting {name!r}: expected a string, got {value!r}")
        return str(value)
    if typing.get_origin(annotation) is list:
        if isinstance(value, str):  # from the environment: a JSON array
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"setting {name!r}: expected a list of strings (in the "
                              f"environment, a JSON array), got {value!r}")
        return value
    if typing.get_origin(annotation) is dict:
        if isinstance(value, str):  # from the environment: the table as JSON
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict):
            raise ConfigError(f"setting {name!r}: expected a table (in the environment, a "
                              f"JSON object), got {value!r}")
    return value


def settings_from_table(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Build `cls` from one TOML table (a part's own, such as `[queue.NAME]`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s): {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _convert(f"{where} {name}", value, hints[name])
                  for name, value in table.items()})


def load_settings(cls: type[T], path: str | os.PathLike | None, env_prefix: str,
                  environ: dict[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from the TOML file at `path` (if it exists), the environment, then overrides."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if path is not None and Path(path).is_file():
        try:
            with open(path, "rb") as fh:
                from_file = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        unknown = sorted(set(from_file) - set(fields))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
        values.update(from_file)
    for name in fields:
        env_name = env_prefix + name.upper()
        if env_name in environ:
            values[name] = environ[env_name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    converted = {name: _convert(name, value, hints[name]) for name, value in values.items()}
    return cls(**converted)


def setting(default: Any = dataclasses.MISSING, doc: str = "", *,
            factory: Any = dataclasses.MISSING, shown: str | None = None) -> Any:
    """A settings field with its meaning (`doc`), the one source of service/README.md's
    settings tables (`scripts/settings-tables.py` writes them); `shown`: the table's
    default cell (Markdown) where the value alone would not say it (a computed default)."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"doc": doc, "shown": shown})


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(key, default as a Markdown cell, meaning) of each setting of `cls`."""
    rows = []
    for f in dataclasses.fields(cls):
        shown = f.metadata.get("shown")
        if shown is None:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            text = value if isinstance(value, str) and value else json.dumps(value)
            shown = f"`{text}`"
        rows.append((f.name, shown, f.metadata.get("doc", "")))
    return rows


def load_or_report(load: Any, path: str | None, program: str) -> Any:
    """`load(path)`, or None once `program`'s refusal of the settings is on stderr (its
    caller then exits 2)."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return None
