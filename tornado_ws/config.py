"""All settings of a tornado-ws server, each declared once, validated once, then frozen.

Each field says its default, help and checks (``tornado_ws.settings`` says how); the CLI's flags,
``--help`` and the README's table follow from them. ``__post_init__`` adds the rules between
settings. Every error names the flag, since that is what an operator typed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tornado_ws.settings import first_problem, setting

#: Algorithms a deployment may pin. ``none`` is never among them.
SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
SUPPORTED_ALGORITHMS = SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS

#: Shortest HMAC secret per algorithm, in bytes: the hash's output size (RFC 7518 section 3.2).
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

#: Longest session id any deployment may allow (ids travel in every frame and log line).
MAX_SESSION_ID_LIMIT = 1024


def _default_static_dir() -> str:
    """The demo page: ``tornado_ws/static`` in an installed wheel, ``static/`` in a checkout."""
    package = Path(__file__).resolve().parent
    shipped = package / "static"
    return str(shipped if (shipped / "index.html").is_file() else package.parent / "static")


#: Where ``GET /`` finds the demo page (and the browser SDK) unless ``--static-dir`` says otherwise.
DEFAULT_STATIC_DIR = _default_static_dir()

#: What a browser sends as ``Origin``: a scheme, a host and maybe a port; no path, no wildcard.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://(?:[a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)


def _is_origin(origin: str) -> bool:
    match = _ORIGIN.fullmatch(origin.rstrip("/"))
    return origin == "*" or (match is not None and int(match.group(1) or 0) <= 65535)


def _is_broker(url: str) -> bool:
    return url == "memory" or url.startswith(("redis://", "rediss://", "unix://"))


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


#: Where the CLI finds the secrets when their flags are absent: a flag is visible in ``ps``.
ENV_SECRET = "TORNADO_WS_JWT_SECRET"
ENV_METRICS_TOKEN = "TORNADO_WS_METRICS_TOKEN"

NO_KEY_MESSAGE = (
    f"no JWT key configured: pass --jwt-secret SECRET (or set {ENV_SECRET}), --jwt-public-key PATH, or run with --demo"
)


DEMO_WITH_KEY_MESSAGE = (
    "--demo lets anyone mint a token for any organization and user: it cannot run beside a "
    f"configured key (--jwt-secret, {ENV_SECRET} or --jwt-public-key); drop one of them"
)


class ConfigError(ValueError):
    """A setting is missing or out of range; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Server settings. Construct it directly in code (snake_case names), or via the CLI (flags)."""

    host: str = setting("127.0.0.1", "interface to listen on", min_length=1)
    port: int = setting(8888, "TCP port; 0 picks a free one", low=0, high=65535)
    jwt_secret: str | None = setting(
        None,
        "HMAC secret for HS* tokens, as long as the hash at least: 32 bytes for HS256",
        min_length=1,
        secret=True,
        env=ENV_SECRET,
    )
    #: In code the PEM text itself; the CLI reads it from the file the flag names.
    jwt_public_key: str | None = setting(
        None, "PEM public key file for RS*/PS*/ES*/EdDSA tokens", from_file=True, metavar="PATH"
    )
    jwt_algorithms: tuple[str, ...] = setting(
        ("HS256",),
        "comma list of accepted algorithms; never none",
        choices=tuple(sorted(SUPPORTED_ALGORITHMS)),
        min_length=1,
        shown="HS256, or with --jwt-public-key the key's own: RS256, ES256 or EdDSA",
        metavar="ALG[,ALG...]",
    )
    jwt_audience: str | None = setting(None, "required aud claim, checked only when set")
    jwt_issuer: str | None = setting(None, "required iss claim, checked only when set")
    jwt_leeway: float = setting(0.0, "seconds of clock skew allowed on exp and nbf", low=0)
    max_message_size: int = setting(65536, "largest client frame in bytes; a larger one closes 1009", low=64)
    demo: bool = setting(False, "random secret and GET /demo/token for trying it out")
    ping_interval: float = setting(
        3.0, "seconds of silence before a connection is pinged; 0 turns pings off (dead peers then linger)", low=0
    )
    ping_timeout: float = setting(2.0, "seconds a ping may go unanswered (at most --ping-interval)", low=0)
    history_size: int = setting(100, "messages kept per session for resume; 0 turns history off", low=0)
    history_ttl: float = setting(300.0, "seconds history outlives the session's last activity", low=0)
    #: ``None`` follows ``history_ttl`` (see :attr:`idempotency_seconds`).
    idempotency_window: float | None = setting(
        None,
        "seconds a message id (or an API idempotency_key) is remembered, so a resend is not "
        "published twice; 0 turns duplicate detection off",
        low=0,
        shown="the value of --history-ttl",
    )
    shutdown_timeout: float = setting(10.0, "seconds SIGTERM waits for clients to finish closing", low=0)
    static_dir: str = setting(
        DEFAULT_STATIC_DIR,
        "directory of the demo page",
        rule=_is_dir,
        expects="a directory",
        shown="the package's static/",
    )
    rate_limit: float = setting(20.0, "inbound frames per second per connection (token bucket); 0 turns it off", low=0)
    rate_burst: int = setting(40, "inbound burst per connection", low=1)
    signal_rate: float = setting(
        60.0, "signals per second per connection, a budget apart from --rate-limit; 0 turns it off", low=0
    )
    signal_burst: int = setting(120, "signal burst per connection", low=1)
    max_presence_state_size: int = setting(
        1024, "bytes of a connection's presence state, encoded; larger: error state_too_large", low=2
    )
    presence_roster_limit: int = setting(
        1000,
        "participants beyond which a welcome lists only the first ones and joins/leaves go out as"
        " one presence_summary per second",
        low=1,
    )
    max_connections_per_user: int = setting(
        8,
        "open connections per org and user across sessions (a /ws socket in many sessions is one);"
        " the next one is closed 1013",
        low=1,
    )
    max_sessions_per_connection: int = setting(
        100, "sessions one /ws connection may be in at once; the next join gets left 1013", low=1
    )
    max_outbound_buffer: int = setting(
        1 << 20, "unsent bytes a connection may queue before it is cut as a slow consumer (4008)", low=1024
    )
    max_connections: int = setting(20_000, "open WebSocket connections per process; beyond it HTTP 503", low=1)
    max_connections_per_org: int = setting(
        10_000, "open connections of one org per process (0: no cap); the next one is closed 1013", low=0
    )
    max_session_id_length: int = setting(128, "longest accepted session id", low=1, high=MAX_SESSION_ID_LIMIT)
    max_sessions_per_org: int = setting(
        1000, "sessions (with members or kept history) per org; beyond it 1013, or 429 from the API", low=1
    )
    #: ``None`` lets a browser in only from the request's own host; a tuple lists those allowed.
    allowed_origins: tuple[str, ...] | None = setting(
        None,
        "comma list of browser origins allowed to connect",
        rule=_is_origin,
        expects="* or scheme://host[:port] (e.g. https://app.example.com)",
        shown="same host as the request",
        metavar="ORIGIN[,ORIGIN...]",
    )
    log_format: str = setting("text", "text, or json for one JSON object per line", choices=("text", "json"))
    broker: str = setting(
        "memory",
        "memory (one process), or a Redis URL (redis://host:port/db) shared by all nodes",
        rule=_is_broker,
        expects="memory or a redis:// URL",
    )
    workers: int = setting(1, "processes sharing the port; more than one needs a Redis broker", low=1)
    metrics_token: str | None = setting(
        None,
        "bearer token (16 characters at least) that GET /metrics requires; unset, /metrics is open",
        min_length=16,
        secret=True,
        env=ENV_METRICS_TOKEN,
    )

    def __post_init__(self) -> None:
        problem = first_problem(self)
        if problem is not None:
            raise ConfigError(problem)
        self._check_keys()
        if self.workers > 1 and self.broker == "memory":
            raise ConfigError("--workers above 1 needs --broker redis://...: the memory broker cannot share sessions")

    @property
    def idempotency_seconds(self) -> float:
        """The idempotency window in effect: ``--idempotency-window``, else ``--history-ttl``."""
        return self.history_ttl if self.idempotency_window is None else self.idempotency_window

    def _check_keys(self) -> None:
        if self.jwt_secret is None and self.jwt_public_key is None and not self.demo:
            raise ConfigError(NO_KEY_MESSAGE)
        if self.demo and (self.jwt_secret is not None or self.jwt_public_key is not None):
            raise ConfigError(DEMO_WITH_KEY_MESSAGE)
        wants_secret = SYMMETRIC_ALGORITHMS.intersection(self.jwt_algorithms)
        wants_key = ASYMMETRIC_ALGORITHMS.intersection(self.jwt_algorithms)
        if wants_secret and self.jwt_secret is None and not self.demo:
            raise ConfigError(f"--jwt-algorithms {','.join(sorted(wants_secret))} needs --jwt-secret")
        if wants_key and self.jwt_public_key is None:
            raise ConfigError(f"--jwt-algorithms {','.join(sorted(wants_key))} needs --jwt-public-key")
        if self.jwt_secret is not None:
            needed = max((MIN_SECRET_BYTES[alg] for alg in wants_secret), default=0)
            if len(self.jwt_secret.encode("utf-8", "surrogatepass")) < needed:
                raise ConfigError(
                    f"--jwt-secret is too short for {','.join(sorted(wants_secret))}: at least {needed} bytes "
                    "(RFC 7518: the secret must be as long as the hash; e.g. `openssl rand -base64 48`)"
                )
        if self.jwt_public_key is not None and not wants_key:
            raise ConfigError("--jwt-public-key needs an asymmetric algorithm in --jwt-algorithms (e.g. RS256)")


@dataclasses.dataclass(frozen=True)
class CliOptions:
    """Settings of the command line only: an embedding application configures its own logging."""

    log_level: str = setting("INFO", "least severe log records shown", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def __post_init__(self) -> None:
        problem = first_problem(self)
        if problem is not None:
            raise ConfigError(problem)


#: Everything ``tornado-ws`` can be told, in the order ``--help`` lists it.
DECLARED = (Config, CliOptions)
