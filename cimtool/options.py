"""Options declared once: a stage's parameters are the fields of its params dataclass.

A field made with :func:`option` carries what the command line needs: help, panel, flag, the
type the command line takes where it differs from the field's, and a parser from one to the
other. ``cli.py`` derives every stage command's options from its params dataclass, so adding an
option to a stage is one edit, a field (CONTRIBUTING.md shows one). A field whose type is itself
a params dataclass (e.g. the mapping options several stages share) contributes its own options.
Fields without :func:`option` are not on the command line.

This module stays light (no torch, numpy or pyarrow): ``cimtool --help`` loads every command's
params.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import Any

from cimtool.errors import CimtoolError

KEY = "cimtool.option"


@dataclass(frozen=True)
class Option:
    """How one params field appears on the command line."""

    help: str
    panel: str | None = None
    flag: str | None = None  # default: --field-name
    old_flag: str | None = None  # an earlier spelling, still accepted with a deprecation note
    cli_type: Any = None  # the type the command line takes where it differs from the field's
    parse: Callable[[Any], Any] | None = None  # command-line value → field value (also for None);
    # a ValueError it raises becomes the one-line error "--flag: <its message>"
    show: Callable[[Any], Any] | None = None  # field default → the command line's default
    envvar: str | None = None
    argument: bool = False  # positional, not --flag
    required: bool = False  # no default on the command line

    def flag_for(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")


def option(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | Any = MISSING,
           **spec: Any) -> Any:
    """A params field that is a command-line option (``spec``: the other fields of :class:`Option`)."""
    return field(default=default, default_factory=factory, metadata={KEY: Option(help=help, **spec)})


def like(cls: type, name: str, default: Any = MISSING, help: str | None = None, **spec: Any) -> Any:
    """The option ``name`` of params class ``cls`` for another class, with another default (and
    ``help`` appended to its help, or other ``spec`` fields): one declaration, several stages."""
    f = next(f for f in fields(cls) if f.name == name)
    base = f.metadata[KEY]
    changed = replace(base, help=f"{base.help} {help}" if help else base.help, **spec)
    default = default_of(f) if default is MISSING else default
    return field(default=default, metadata={KEY: changed})


def spec_of(f: dataclasses.Field) -> Option | None:
    return f.metadata.get(KEY)


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def walk(cls: type) -> Iterator[tuple[dataclasses.Field, Any, Option]]:
    """(field, resolved type, option) of every command-line field of ``cls``, nested params
    dataclasses expanded in place."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            yield from walk(hints[f.name])
        elif spec_of(f) is not None:
            yield f, hints[f.name], spec_of(f)


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from command-line ``values`` by field name (parsed where declared;
    nested params dataclasses built from the same values; absent fields keep their defaults)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], values)
        elif f.name in values:
            spec = spec_of(f)
            kwargs[f.name] = _parse(spec, f.name, values[f.name]) if spec and spec.parse else values[f.name]
    return cls(**kwargs)


def _parse(spec: Option, name: str, value: Any) -> Any:
    try:
        return spec.parse(value)
    except ValueError as exc:
        raise CimtoolError(f"{spec.flag_for(name)}: {exc}") from None


def text(value: Any) -> str | None:
    """A path option's value as the params record it (a string; None stays None)."""
    return None if value is None else str(value)


def comma_list(kind: Callable[[str], Any] = str) -> Callable[[Any], tuple[Any, ...]]:
    """A parser for ``a,b,c`` options (blank items dropped)."""
    def parse(given: Any) -> tuple[Any, ...]:
        return tuple(kind(item.strip()) for item in str(given).split(",") if item.strip())
    return parse


def numbers(kind: type = int) -> Callable[[Any], tuple[Any, ...]]:
    """A parser for comma-separated ``kind`` (int or float) values, duplicates dropped."""
    def parse(given: Any) -> tuple[Any, ...]:
        try:
            values = tuple(kind(s) for s in str(given).split(",") if s.strip())
        except ValueError:
            noun = "integers" if kind is int else "numbers"
            raise ValueError(f"'{given}' is not a comma-separated list of {noun}") from None
        if not values:
            raise ValueError("empty")
        return tuple(dict.fromkeys(values))
    return parse


def comma_text(values: Any) -> str:
    """A tuple default shown the way the command line takes it: ``a,b,c``."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
