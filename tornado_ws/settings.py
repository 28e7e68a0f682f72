"""How a setting is declared: once, as a field of a frozen dataclass, and everything else derived.

A field made by :func:`setting` carries its name, type and default as any dataclass field does,
and a :class:`Setting` in its metadata: its help, its checks, its environment variable and how
the docs write a default that is not a literal. The CLI's flags and ``--help``
(``tornado_ws.cli``), the validation (``Config.__post_init__``) and the test that holds the
README's table to the code all read the fields, so each default is written in one place.

This module is the machinery and knows no tornado-ws setting; ``config.py`` is the list of the
settings and the rules between them. Together they were past 300 lines, and apart each reads
top to bottom: what a setting can declare here, what tornado-ws declares there.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_KEY = "tornado_ws.setting"

#: The user and password of a URL, hidden when an error echoes a value (a Redis URL may hold one).
_USERINFO = re.compile(r"(?<=//)[^/@]*@")


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a field declares beyond its name, type and default."""

    help: str
    #: Inclusive bounds of a number.
    low: float | None = None
    high: float | None = None
    #: The values a string (or each item of a tuple) may take.
    choices: tuple[str, ...] = ()
    #: Fewest characters of a string, or items of a tuple.
    min_length: int = 0
    #: A test for what bounds and choices cannot say, and the words for what it accepts.
    rule: Callable[[Any], bool] | None = None
    expects: str = ""
    #: Never echoed in an error, never in ``repr``.
    secret: bool = False
    #: The environment variable the CLI reads when the flag is absent.
    env: str | None = None
    #: How ``--help`` and the docs write a default that is not a literal ("same host as the request").
    shown: str | None = None
    #: The flag takes a file's path and the setting is the file's text (``--jwt-public-key PATH``).
    from_file: bool = False
    metavar: str | None = None


def setting(
    default: T,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] = (),
    min_length: int = 0,
    rule: Callable[[Any], bool] | None = None,
    expects: str = "",
    secret: bool = False,
    env: str | None = None,
    shown: str | None = None,
    from_file: bool = False,
    metavar: str | None = None,
) -> T:
    """A dataclass field declared once: ``port: int = setting(8888, "TCP port", low=0, high=65535)``."""
    spec = Setting(help, low, high, choices, min_length, rule, expects, secret, env, shown, from_file, metavar)
    return dataclasses.field(default=default, repr=not secret, metadata={_KEY: spec})


def declared(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Setting]]:
    """The fields of a dataclass that :func:`setting` made, in declaration order."""
    return [(f, f.metadata[_KEY]) for f in dataclasses.fields(cls) if _KEY in f.metadata]


def flag(name: str) -> str:
    """The command-line flag of a setting: ``max_message_size`` is ``--max-message-size``."""
    return "--" + name.replace("_", "-")


def base_type(hint: Any) -> Any:
    """The type a setting holds when it is set: ``str | None`` is ``str``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def literal(value: object) -> str:
    """A default as the docs write it: ``3.0`` is ``3``, ``None`` is ``none``, ``False`` is ``off``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(literal(item) for item in value)
    return str(value)


def shown_default(field: dataclasses.Field[Any], spec: Setting) -> str:
    """The default as ``--help`` and the README write it, environment variable first."""
    text = spec.shown if spec.shown is not None else literal(field.default)
    return f"env {spec.env}, else {text}" if spec.env else text


def first_problem(settings: object) -> str | None:
    """What is wrong with the first field of ``settings`` that breaks its own declaration, naming its flag."""
    for field, spec in declared(type(settings)):
        problem = _problem(flag(field.name), getattr(settings, field.name), spec)
        if problem is not None:
            return problem
    return None


def _problem(name: str, value: Any, spec: Setting) -> str | None:
    if value is None:  # an optional setting left unset
        return None
    got = "" if spec.secret else f", got {_echo(value)}"
    if isinstance(value, (str, tuple)) and len(value) < spec.min_length:
        if spec.min_length == 1:
            return f"{name} must not be empty"
        return f"{name} must be at least {spec.min_length} {'characters' if isinstance(value, str) else 'values'}"
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        return f"{name} must be between {spec.low} and {spec.high}{got}"
    if spec.low is not None and value < spec.low:
        return f"{name} must be at least {spec.low}{got}"
    for item in value if isinstance(value, tuple) else (value,):
        this = "" if spec.secret else f" {_echo(item)}"
        if spec.choices and item not in spec.choices:
            return f"{name}:{this} is not one of {', '.join(spec.choices)}"
        if spec.rule is not None and not spec.rule(item):
            return f"{name}:{this} is not {spec.expects}"
    return None


def _echo(value: object) -> str:
    """A value for an error line: short, and without a URL's password."""
    return repr(_USERINFO.sub("***@", value[:80]) if isinstance(value, str) else value)
