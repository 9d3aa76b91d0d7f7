"""Options declared once, on the dataclass field they set; this module imports nothing of ours.

A field declared with ``option(...)`` carries its command-line help, group,
metavar, choices and range beside its default. ``add_options`` builds the
argparse options of a dataclass from its fields, so a new option is one field:
the flag is the field's name (``--no-NAME`` for a switch that is on by default),
its type and arity come from the annotation, and the help ends in the default,
in words. ``benchmark.config.RunConfig`` and ``features.settings.LabelSettings``
declare their options this way; ``RunConfig`` reuses ``LabelSettings``' (``reuse``),
so ``run`` and ``audit`` read the labels options from one declaration.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

_KEY = "option"
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}
# A number range: (is the value in range, the range in words).
Range = tuple[Callable[[Any], bool], str]


@dataclass(frozen=True)
class Option:
    """How a field is given on the command line: its help, group title, metavar, choices and number range."""

    help: str
    group: str = "options"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    range: Range | None = None


def option(default: Any, help: str, **declared: Any) -> Any:
    """A dataclass field with ``default`` that is also a command-line option (``Option``'s other fields by name)."""
    return field(default=default, metadata={_KEY: Option(help, **declared)})


def reuse(owner: type, name: str, **changes: Any) -> Any:
    """The option field ``name`` of the dataclass ``owner`` declared again on another: same default, same option."""
    source = next(one for one in fields(owner) if one.name == name)
    return field(default=source.default, metadata={_KEY: replace(source.metadata[_KEY], **changes)})


def declared(cls: type) -> list[tuple[Field, Option]]:
    """The fields of the dataclass ``cls`` that are command-line options, with their declarations, in field order."""
    return [(one, one.metadata[_KEY]) for one in fields(cls) if _KEY in one.metadata]


def annotation(one: Field) -> tuple[str, bool, bool]:
    """A field's annotation (a string) as (item type name, takes several values, may be None)."""
    optional = one.type.endswith(" | None")
    base = one.type.removesuffix(" | None")
    if base.startswith("tuple["):
        return base[len("tuple[") :].split(",")[0], True, optional
    return base, False, optional


def is_switch_on(one: Field) -> bool:
    """Whether the field is a switch that is on by default: its flag is ``--no-NAME``."""
    return annotation(one)[0] == "bool" and one.default is True


def flag(one: Field) -> str:
    """The command-line flag of a field: ``--name-with-dashes``, or ``--no-...`` for a switch on by default."""
    return ("--no-" if is_switch_on(one) else "--") + one.name.replace("_", "-")


def default_words(default: object, switch: bool) -> str:
    """A default as the help shows it: a switch is off (or on, for a ``--no-...`` one), nothing set is "none"."""
    if switch:
        return "on" if default is True else "off"
    if isinstance(default, tuple):
        return " ".join(str(v) for v in default) or "none"
    return "none" if default is None else str(default)


def _argument(one: Field, declared_as: Option) -> dict[str, Any]:
    """The ``add_argument`` keywords of a field; unset options are left out of the namespace (SUPPRESS)."""
    kind, many, _ = annotation(one)
    help = declared_as.help
    if "(default:" not in help:
        help = f"{help} (default: {default_words(one.default, kind == 'bool')})"
    keywords: dict[str, Any] = {"help": help, "dest": one.name, "default": argparse.SUPPRESS}
    if kind == "bool":
        return {**keywords, "action": "store_false" if is_switch_on(one) else "store_true"}
    if many:
        keywords["nargs"] = "+"
    if kind != "str":
        keywords["type"] = _TYPES[kind]
    if declared_as.choices is not None:
        keywords["choices"] = list(declared_as.choices)
    if declared_as.metavar is not None:
        keywords["metavar"] = declared_as.metavar
    return keywords


def add_options(parser: argparse.ArgumentParser, cls: type, group_order: tuple[str, ...] = ()) -> None:
    """Add every option field of the dataclass ``cls`` to ``parser``, in argument groups by their titles.

    Groups come in ``group_order``, then any other in the order of their first field; within a group, options
    come in field order. An option not given stays out of the parsed namespace, so the dataclass default (or a
    config file) applies.
    """
    by_group: dict[str, list[tuple[Field, Option]]] = {title: [] for title in group_order}
    for one, declared_as in declared(cls):
        by_group.setdefault(declared_as.group, []).append((one, declared_as))
    for title, members in by_group.items():
        group = parser.add_argument_group(title)
        for one, declared_as in members:
            group.add_argument(flag(one), **_argument(one, declared_as))


def given_values(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """The option fields of ``cls`` that ``namespace`` holds (those given), lists made tuples."""
    values = vars(namespace)
    return {one.name: tuple(values[one.name]) if isinstance(values[one.name], list) else values[one.name]
            for one, _ in declared(cls) if one.name in values}  # fmt: skip


def number_ranges(cls: type) -> dict[str, Range]:
    """The option fields of ``cls`` declared with a number range, and their ranges."""
    return {one.name: declared_as.range for one, declared_as in declared(cls) if declared_as.range is not None}


def choices_of(cls: type) -> dict[str, tuple[str, ...]]:
    """The option fields of ``cls`` declared with choices, and their choices."""
    return {one.name: declared_as.choices for one, declared_as in declared(cls) if declared_as.choices is not None}
