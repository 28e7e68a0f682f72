"""``python -m tornado_ws`` / ``tornado-ws``: flags and env into a Config, then run.

Exit codes: 0 after a clean shutdown, 2 for a bad or missing setting (one
line on stderr, never a traceback), 1 when the server cannot start (e.g. the
port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from tornado_ws import __version__
from tornado_ws.auth import algorithms_for_key
from tornado_ws.config import DEFAULT_STATIC_DIR, Config, ConfigError
from tornado_ws.logs import configure_logging

ENV_SECRET = "TORNADO_WS_JWT_SECRET"
ENV_METRICS_TOKEN = "TORNADO_WS_METRICS_TOKEN"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not the whole usage: the usage is 30 lines and hides the mistake.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tornado-ws",
        description="Real-time session hub: JWT-authenticated WebSocket sessions with ordered broadcast and presence.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8888, help="TCP port; 0 picks a free one (default: %(default)s)")
    p.add_argument("--jwt-secret", help=f"HMAC secret for HS* tokens (or env {ENV_SECRET})")
    p.add_argument("--jwt-public-key", metavar="PATH", help="PEM public key file for RS*/PS*/ES*/EdDSA tokens")
    p.add_argument(
        "--jwt-algorithms",
        help="comma list of accepted algorithms (default: HS256, or the key's own with --jwt-public-key)",
    )
    p.add_argument("--jwt-audience", help="required 'aud' claim (checked only when set)")
    p.add_argument("--jwt-issuer", help="required 'iss' claim (checked only when set)")
    p.add_argument("--jwt-leeway", type=float, default=0.0, help="clock skew allowed on exp/nbf, seconds")
    p.add_argument("--max-message-size", type=int, default=65536, help="largest frame in bytes; bigger closes 1009")
    p.add_argument("--ping-interval", type=float, default=3.0, help="seconds between server pings (0: off)")
    p.add_argument("--ping-timeout", type=float, default=2.0, help="seconds a ping may go unanswered")
    p.add_argument("--history-size", type=int, default=100, help="messages kept per session for resume")
    p.add_argument("--history-ttl", type=float, default=300.0, help="seconds history outlives the last activity")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds to wait for clients on SIGTERM")
    p.add_argument("--rate-limit", type=float, default=20.0, help="inbound frames/s per connection (0: off)")
    p.add_argument("--rate-burst", type=int, default=40, help="inbound burst per connection")
    p.add_argument("--max-connections-per-user", type=int, default=8, help="per org+user; the next one closes 1013")
    p.add_argument("--max-outbound-buffer", type=int, default=1 << 20, help="unsent bytes before a 4008 cut")
    p.add_argument("--max-connections", type=int, default=20_000, help="per process; beyond it HTTP 503")
    p.add_argument(
        "--max-connections-per-org",
        type=int,
        default=10_000,
        help="per org, per process (0: off); the next closes 1013",
    )
    p.add_argument("--max-session-id-length", type=int, default=128, help="longest accepted session id")
    p.add_argument("--max-sessions-per-org", type=int, default=1000, help="sessions per org; beyond it 1013 / 429")
    p.add_argument(
        "--allowed-origins",
        help="comma list of browser origins allowed to connect, or * (default: same host as the request)",
    )
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--broker", default="memory", help="memory (default) or redis://host:port/db to scale out")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (needs a redis broker)")
    p.add_argument(
        "--metrics-token",
        help=f"bearer token /metrics requires, at least 16 characters (or env {ENV_METRICS_TOKEN}; default: open)",
    )
    p.add_argument("--static-dir", default=DEFAULT_STATIC_DIR, help="directory of the demo page")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--demo", action="store_true", help="random secret and GET /demo/token for trying it out")
    return p


def _read_key(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--jwt-public-key: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _origins(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    origins = tuple(o.strip() for o in value.split(",") if o.strip())
    if not origins:
        raise ConfigError("--allowed-origins needs at least one origin (or *)")
    return origins


def config_from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> tuple[Config, str]:
    """Parse flags (and ``TORNADO_WS_JWT_SECRET``) into a validated Config and a log level."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    public_key = _read_key(args.jwt_public_key) if args.jwt_public_key else None
    if args.jwt_algorithms is not None:
        algorithms = tuple(a.strip() for a in args.jwt_algorithms.split(",") if a.strip())
    elif public_key is not None:
        algorithms = algorithms_for_key(public_key)
    else:
        algorithms = ("HS256",)
    return Config(
        host=args.host,
        port=args.port,
        jwt_secret=args.jwt_secret if args.jwt_secret is not None else env.get(ENV_SECRET),
        jwt_public_key=public_key,
        jwt_algorithms=algorithms,
        jwt_audience=args.jwt_audience,
        jwt_issuer=args.jwt_issuer,
        jwt_leeway=args.jwt_leeway,
        max_message_size=args.max_message_size,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        history_size=args.history_size,
        history_ttl=args.history_ttl,
        shutdown_timeout=args.shutdown_timeout,
        static_dir=args.static_dir,
        demo=args.demo,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        max_connections_per_user=args.max_connections_per_user,
        max_outbound_buffer=args.max_outbound_buffer,
        max_connections=args.max_connections,
        max_connections_per_org=args.max_connections_per_org,
        max_session_id_length=args.max_session_id_length,
        max_sessions_per_org=args.max_sessions_per_org,
        allowed_origins=_origins(args.allowed_origins),
        log_format=args.log_format,
        broker=args.broker,
        workers=args.workers,
        metrics_token=args.metrics_token if args.metrics_token is not None else env.get(ENV_METRICS_TOKEN),
    ), args.log_level


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
