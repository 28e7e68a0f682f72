"""All settings of a tornado-ws server, validated once, then frozen."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

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

NO_KEY_MESSAGE = (
    "no JWT key configured: pass --jwt-secret SECRET (or set TORNADO_WS_JWT_SECRET), "
    "--jwt-public-key PATH, or run with --demo"
)


DEMO_WITH_KEY_MESSAGE = (
    "--demo lets anyone mint a token for any organization and user: it cannot run beside a "
    "configured key (--jwt-secret, TORNADO_WS_JWT_SECRET or --jwt-public-key); drop one of them"
)


class ConfigError(ValueError):
    """A setting is missing or out of range; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Server settings. Construct it directly in code, or via the CLI."""

    host: str = "127.0.0.1"
    port: int = 8888
    jwt_secret: str | None = None
    #: PEM text of the public key used for RS*/PS*/ES*/EdDSA tokens.
    jwt_public_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 0.0
    max_message_size: int = 65536
    demo: bool = False
    #: Seconds of silence before a connection is pinged; 0 disables pings (dead peers then linger).
    ping_interval: float = 3.0
    #: Seconds a ping may stay unanswered before the connection is dropped (at most ``ping_interval``).
    ping_timeout: float = 2.0
    #: Messages kept per session for resume; 0 disables history.
    history_size: int = 100
    #: Seconds history outlives the session's last activity (also after the last member left).
    history_ttl: float = 300.0
    #: Seconds a graceful shutdown waits for clients to finish closing.
    shutdown_timeout: float = 10.0
    static_dir: str = DEFAULT_STATIC_DIR
    #: Inbound frames per second per connection (token bucket); 0 turns the limit off.
    rate_limit: float = 20.0
    rate_burst: int = 40
    #: Open connections per (org, user) across all sessions; the next one is closed 1013.
    max_connections_per_user: int = 8
    #: Unsent bytes a connection may queue before it is cut as a slow consumer (4008).
    max_outbound_buffer: int = 1 << 20
    #: Open WebSocket connections per process; beyond it the handshake gets HTTP 503.
    max_connections: int = 20_000
    #: Open connections of one organization per process (0: no cap); the next one is closed 1013.
    max_connections_per_org: int = 10_000
    max_session_id_length: int = 128
    #: Sessions (with members or with kept history) per organization: caps memory per tenant.
    max_sessions_per_org: int = 1000
    #: Browser origins allowed to open WebSockets; None means "same host as the request".
    allowed_origins: tuple[str, ...] | None = None
    log_format: str = "text"
    #: ``memory`` (one process) or a Redis URL (``redis://host:port/db``) shared by all nodes.
    broker: str = "memory"
    #: Processes sharing the port (needs a Redis broker when more than one).
    workers: int = 1
    #: When set, ``/metrics`` answers only ``Authorization: Bearer <metrics_token>``.
    metrics_token: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {self.port}")
        if not self.host:
            raise ConfigError("--host must not be empty")
        if self.jwt_secret == "":
            raise ConfigError("--jwt-secret must not be empty")
        if not self.jwt_algorithms:
            raise ConfigError("--jwt-algorithms must name at least one algorithm")
        for alg in self.jwt_algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
                raise ConfigError(f"--jwt-algorithms: unsupported algorithm {alg!r} (supported: {supported})")
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
        if self.jwt_leeway < 0:
            raise ConfigError(f"--jwt-leeway must be >= 0 seconds, got {self.jwt_leeway}")
        if self.max_message_size < 64:
            raise ConfigError(f"--max-message-size must be at least 64 bytes, got {self.max_message_size}")
        if self.ping_interval < 0 or self.ping_timeout < 0:
            raise ConfigError("--ping-interval and --ping-timeout must be >= 0")
        if self.history_size < 0 or self.history_ttl < 0:
            raise ConfigError("--history-size and --history-ttl must be >= 0")
        if self.shutdown_timeout < 0:
            raise ConfigError("--shutdown-timeout must be >= 0")
        if self.rate_limit < 0 or self.rate_burst < 1:
            raise ConfigError("--rate-limit must be >= 0 and --rate-burst >= 1")
        if self.max_sessions_per_org < 1:
            raise ConfigError("--max-sessions-per-org must be >= 1")
        if self.max_connections_per_user < 1 or self.max_connections < 1:
            raise ConfigError("--max-connections and --max-connections-per-user must be >= 1")
        if self.max_connections_per_org < 0:
            raise ConfigError(f"--max-connections-per-org must be >= 0 (0: no cap), got {self.max_connections_per_org}")
        if self.max_outbound_buffer < 1024:
            raise ConfigError(f"--max-outbound-buffer must be at least 1024 bytes, got {self.max_outbound_buffer}")
        if not 1 <= self.max_session_id_length <= MAX_SESSION_ID_LIMIT:
            raise ConfigError(f"--max-session-id-length must be between 1 and {MAX_SESSION_ID_LIMIT}")
        if self.broker != "memory" and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("--broker must be memory or a redis:// URL")
        if self.workers < 1:
            raise ConfigError("--workers must be >= 1")
        if self.workers > 1 and self.broker == "memory":
            raise ConfigError("--workers above 1 needs --broker redis://...: the memory broker cannot share sessions")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigError("--metrics-token must be at least 16 characters")
        for origin in self.allowed_origins or ():
            match = _ORIGIN.fullmatch(origin.rstrip("/"))
            if origin != "*" and (match is None or int(match.group(1) or 0) > 65535):
                raise ConfigError(
                    f"--allowed-origins: {origin[:80]!r} is not * or scheme://host[:port] (e.g. https://app.example.com)"
                )
        if not Path(self.static_dir).is_dir():
            raise ConfigError(f"--static-dir: {self.static_dir[:200]!r} is not a directory")
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be text or json")
