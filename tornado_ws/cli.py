"""``python -m tornado_ws`` / ``tornado-ws``: flags and env into a Config, then run.

Every flag, its type, its help and its default come from the settings declared in ``config.py``
(see ``tornado_ws.settings``); only ``--version`` and the one default that depends on another
setting (``--jwt-algorithms`` from the public key's type) are written here.

Exit codes: 0 after a clean shutdown, 2 for a bad or missing setting (one
line on stderr, never a traceback), 1 when the server cannot start (e.g. the
port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import resource
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from tornado_ws import __version__
from tornado_ws.auth import algorithms_for_key
from tornado_ws.config import DECLARED, CliOptions, Config, ConfigError
from tornado_ws.logs import configure_logging
from tornado_ws.settings import Setting, base_type, declared, flag, shown_default


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the whole usage: the usage is 30 lines and hides the mistake.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _comma_list(value: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise argparse.ArgumentTypeError("needs at least one value")
    return items


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field[Any], spec: Setting, hint: Any) -> None:
    kind = base_type(hint)
    # argparse formats help with %: a literal one must be doubled.
    help_text = f"{spec.help} (default: {shown_default(field, spec)})".replace("%", "%%")
    if kind is bool:
        parser.add_argument(flag(field.name), action="store_true", help=help_text)
        return
    convert: Callable[[str], Any] = _comma_list if typing.get_origin(kind) is tuple else kind
    metavar = spec.metavar or ("{" + ",".join(spec.choices) + "}" if spec.choices else None)
    parser.add_argument(flag(field.name), type=convert, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """Every declared setting as a flag; an absent flag leaves the setting to its declared default."""
    p = _Parser(
        prog="tornado-ws",
        description="Real-time session hub: JWT-authenticated WebSocket sessions with ordered broadcast and presence.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for cls in DECLARED:
        hints = typing.get_type_hints(cls)
        for field, spec in declared(cls):
            _add_flag(p, field, spec, hints[field.name])
    return p


def _read_file(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag(name)}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def config_from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> tuple[Config, str]:
    """Parse flags (and the environment variables settings declare) into a validated Config and a log level."""
    env = os.environ if env is None else env
    given: dict[str, Any] = vars(build_parser().parse_args(argv))
    for field, spec in declared(Config):
        if spec.env is not None and field.name not in given and spec.env in env:
            given[field.name] = env[spec.env]
        if spec.from_file and field.name in given:
            given[field.name] = _read_file(field.name, given[field.name])
    # The one default that depends on another setting: a public key implies its own algorithm.
    if "jwt_algorithms" not in given and given.get("jwt_public_key") is not None:
        given["jwt_algorithms"] = algorithms_for_key(given["jwt_public_key"])
    cli_only = {field.name for field, _ in declared(CliOptions)}
    options = CliOptions(**{name: given.pop(name) for name in cli_only & given.keys()})
    return Config(**given), options.log_level


def _raise_fd_limit() -> None:
    """One descriptor per connection: take the hard limit, not the shell's soft default (often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    from tornado_ws.server import run, run_workers

    try:
        config, log_level = config_from_args(argv)
    except ConfigError as exc:
        print(f"tornado-ws: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(log_level, config.log_format)
    _raise_fd_limit()
    try:
        if config.workers > 1:
            return run_workers(config)
        asyncio.run(run(config))
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"tornado-ws: error: cannot listen on {config.host}:{config.port}: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
