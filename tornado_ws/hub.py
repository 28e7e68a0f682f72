"""``tornado_ws.Hub``: the in-process API. The CLI and ``make_app`` are built on it.

hub = tornado_ws.Hub(jwt_secret="...", history_size=100, authorize=may_join)
app = tornado.web.Application([*hub.routes(prefix="/rt"), (r"/", MyPage)])
seq = await hub.publish("acme", "room1", {"kind": "invoice-paid"}, user_id="billing")
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.ioloop import PeriodicCallback
from tornado.routing import URLSpec

from tornado_ws.auth import Claims, TokenVerifier
from tornado_ws.brokers.base import MAX_BAN_SECONDS, Broker, SessionLimit
from tornado_ws.brokers.memory import MemoryBroker
from tornado_ws.config import Config
from tornado_ws.core.protocol import encode_data, valid_message_id, valid_session_id
from tornado_ws.core.registry import Registry, SessionKey
from tornado_ws.errors import CloseCode
from tornado_ws.hooks import Authorize, Hooks, Observer, OnMessage
from tornado_ws.logs import install_redaction, log_request
from tornado_ws.metrics import Metrics
from tornado_ws.web.api import DemoTokenHandler, HealthHandler, NotFoundHandler, PageHandler, api_routes
from tornado_ws.web.connection import Connection
from tornado_ws.web.handler import MultiplexHandler, SessionHandler
from tornado_ws.web.state import AppState

#: How often idle history is swept (ms); the TTL is a lower bound, not exact.
EXPIRE_EVERY_MS = 5_000


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    """The registry's clock for coalescing presence frames: the running loop's."""
    return asyncio.get_running_loop().call_later(delay, callback)


def _make_broker(config: Config) -> Broker:
    def registry(history_size: int, history_ttl: float) -> Registry:
        return Registry(
            history_size=history_size,
            history_ttl=history_ttl,
            max_sessions_per_org=config.max_sessions_per_org,
            max_connections_per_user=config.max_connections_per_user,
            max_connections_per_org=config.max_connections_per_org,
            idempotency_window=config.idempotency_seconds,
            roster_limit=config.presence_roster_limit,
            schedule=_call_later,
        )

    if config.broker == "memory":
        return MemoryBroker(registry(config.history_size, config.history_ttl))
    from tornado_ws.brokers.redis import RedisBroker  # redis is an optional extra

    # Order, history and presence live in Redis; the local registry only fans out. It holds the
    # caps too, which the RedisBroker enforces across nodes (but the per-org one, per process).
    local = registry(0, 0)
    return RedisBroker(
        config.broker,
        local,
        history_size=config.history_size,
        history_ttl=config.history_ttl,
        idempotency_window=config.idempotency_seconds,
    )


class Hub:
    """One tornado-ws hub inside a Tornado process.

    Keyword arguments are the CLI options in snake_case (``jwt_secret``,
    ``history_size``, ``rate_limit``, ...) or a ready :class:`Config`; the
    hooks are ``authorize``, ``on_message``, ``on_join`` and ``on_leave``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        authorize: Authorize | None = None,
        on_message: OnMessage | None = None,
        on_join: Observer | None = None,
        on_leave: Observer | None = None,
        broker_impl: Broker | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            config = Config(**settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        self.config = config
        install_redaction()  # before any route is mounted: no access line may carry a token
        self._demo_secret = secrets.token_urlsafe(32) if config.demo and not config.jwt_secret else None
        # ``broker`` is the config option (memory / redis URL); ``broker_impl`` a ready Broker.
        self.broker = broker_impl or _make_broker(config)
        self.registry = self.broker.registry
        self.state = AppState(
            config=config,
            verifier=TokenVerifier.from_config(config, self._demo_secret),
            broker=self.broker,
            metrics=Metrics(self.registry),
            hooks=Hooks(authorize=authorize, on_message=on_message, on_join=on_join, on_leave=on_leave),
            start_housekeeping=self.start,
        )
        self._sweeper: PeriodicCallback | None = None
        self._pinger: PeriodicCallback | None = None
        SessionHandler.registry = self.registry
        #: This hub's WebSocket handler: SessionHandler bound to this hub's registry.
        self.handler_class: type[SessionHandler] = type(
            "SessionHandler", (SessionHandler,), {"registry": self.registry}
        )
        #: This hub's ``/ws`` handler (one connection, many sessions), bound the same way.
        self.multiplex_handler_class: type[MultiplexHandler] = type(
            "MultiplexHandler", (MultiplexHandler,), {"registry": self.registry}
        )

    # -- mounting ------------------------------------------------------------------

    def routes(self, prefix: str = "") -> list[URLSpec]:
        """The hub's routes under ``prefix``: ``/ws``, ``/ws/<id>``, ``/api/...``, health, metrics, demo token."""
        prefix = prefix.rstrip("/")
        kwargs = {"state": self.state}
        rules: list[Any] = [
            (r"/ws", self.multiplex_handler_class, kwargs),
            (r"/ws/(.*)", self.handler_class, kwargs),
            (r"/healthz", HealthHandler),
            *api_routes(self.state),
        ]
        if self.config.demo:
            secret = self.config.jwt_secret or self._demo_secret
            rules.append((r"/demo/token", DemoTokenHandler, {"secret": secret}))
        return [URLSpec(prefix + pattern, handler, *rest) for pattern, handler, *rest in rules]

    def application(self, **settings: Any) -> tornado.web.Application:
        """A whole Application: the hub's routes plus the demo page at ``/`` (what the CLI serves)."""
        static = self.config.static_dir
        routes: list[Any] = [
            *self.routes(),
            (r"/()", PageHandler, {"path": static, "default_filename": "index.html"}),
            (r"/static/(.*)", PageHandler, {"path": static}),
        ]
        return tornado.web.Application(
            routes,
            hub=self,
            state=self.state,
            registry=self.registry,
            config=self.config,
            log_function=log_request,
            default_handler_class=NotFoundHandler,
            compress_response=False,
            **settings,
        )

    # -- housekeeping ----------------------------------------------------------------

    def start(self) -> None:
        """Start the history sweeper and the keepalive pinger (the server calls this;
        the first connection starts them too)."""
        if self._sweeper is None:
            self._sweeper = PeriodicCallback(self._expire, EXPIRE_EVERY_MS)
            self._sweeper.start()
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        if self._pinger is None:
            # One timer for every connection (pings and token expiry); ticks often enough to
            # honour the ping timeout, and at least every second for expiry.
            tick = max(0.05, min(interval, timeout or interval) / 2) if interval > 0 else 1.0
            self._pinger = PeriodicCallback(self._keepalive, min(tick, 1.0) * 1000)
            self._pinger.start()

    def _expire(self) -> None:
        self.registry.expire()

    def _keepalive(self) -> None:
        now = asyncio.get_running_loop().time()  # the clock Connection.last_seen uses
        wall = time.time()  # the clock of a token's exp
        interval = self.config.ping_interval
        timeout = min(self.config.ping_timeout or interval, interval)
        for member in list(self.registry.members()):
            peer = member.peer
            if isinstance(peer, Connection):
                peer.keepalive(now, wall, interval, timeout)
        for connection in list(self.state.multiplexed):
            if isinstance(connection, Connection):
                connection.keepalive(now, wall, interval, timeout)

    def stop(self) -> None:
        for timer in (self._sweeper, self._pinger):
            if timer is not None:
                timer.stop()
        self._sweeper = self._pinger = None

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """Mark the hub draining and ask every connection to close (``1001`` by default)."""
        self.state.draining = True
        for connection in list(self.state.multiplexed):
            connection.close(code, reason)
        self.registry.close_all(code, reason)

    # -- server-side calls -------------------------------------------------------------

    def verify(self, token: str | None) -> Claims:
        """The claims of ``token``, checked exactly like a WebSocket's or the HTTP API's.

        Raises :class:`tornado_ws.auth.AuthError`, whose ``reason`` is safe to show and log.
        """
        return self.state.verifier.verify(token)

    def _key(self, org_id: str, session_id: str) -> SessionKey:
        if not valid_session_id(session_id, self.config.max_session_id_length):
            raise ValueError(f"invalid session id {session_id[:40]!r}")
        return SessionKey(org_id, session_id)

    async def publish(
        self,
        org_id: str,
        session_id: str,
        data: Any,
        *,
        user_id: str,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Publish ``data`` to a session exactly like a client message; returns its seq.

        With ``idempotency_key`` (1-64 characters of ``[A-Za-z0-9._:-]``) it is a message
        ``id``: the frame carries it, and a repeat of ``(org, session, user_id, key)`` within
        ``--idempotency-window`` publishes nothing and returns the original seq.

        Raises ``ValueError`` for a bad session id or key, or data JSON cannot carry (NaN,
        lone surrogates), ``BrokerUnavailable`` when Redis cannot be reached.
        """
        key = self._key(org_id, session_id)
        if idempotency_key is not None and not valid_message_id(idempotency_key):
            raise ValueError("idempotency_key must be 1-64 characters of [A-Za-z0-9._:-]")
        data_json = encode_data(data)
        await self.state.ensure_started()
        try:
            if idempotency_key is None:
                seq = await self.broker.publish(key, user_id=user_id, name=name, data_json=data_json)
            else:
                seq, duplicate = await self.broker.publish_once(
                    key, user_id=user_id, name=name, data_json=data_json, message_id=idempotency_key
                )
                if duplicate:
                    return seq
        except SessionLimit:
            raise ValueError(f"organization {org_id!r} is at its session limit") from None
        self.state.metrics.api_messages_in += 1
        return seq

    def presence(self, org_id: str, session_id: str) -> dict[str, Any]:
        """``{"participants": [...], "participant_count": N}`` as this process sees it.

        With the memory broker that is the whole truth; with Redis use :meth:`fetch_presence`.
        """
        return self.registry.presence(self._key(org_id, session_id))

    async def fetch_presence(self, org_id: str, session_id: str) -> dict[str, Any]:
        """Presence across every node (asks the broker)."""
        await self.state.ensure_started()
        return await self.broker.presence(self._key(org_id, session_id))

    async def kick(self, org_id: str, session_id: str, user_id: str, *, ban_seconds: int = 0) -> int:
        """Close every connection of ``user_id`` in the session, on every node, with 4003; returns how many.

        ``ban_seconds`` (0 to 30 days) also refuses the user's joins of the session that long,
        on every node (close 4003 ``banned``); ``ValueError`` for anything else.
        """
        key = self._key(org_id, session_id)
        if isinstance(ban_seconds, bool) or not isinstance(ban_seconds, int) or not 0 <= ban_seconds <= MAX_BAN_SECONDS:
            raise ValueError(f"ban_seconds must be an integer from 0 to {MAX_BAN_SECONDS}")
        await self.state.ensure_started()
        return await self.broker.kick(key, user_id, CloseCode.KICKED, "kicked", ban_seconds=ban_seconds)

    async def aclose(self) -> None:
        """Stop the sweeper and disconnect the broker."""
        self.stop()
        await self.broker.close()


def make_app(config: Config) -> tornado.web.Application:
    """The whole application the CLI serves: ``Hub(config).application()``.

    ``app.settings`` holds ``hub`` (the :class:`Hub`), ``registry`` (its session registry, also
    ``SessionHandler.registry``) and ``state``.
    """
    return Hub(config).application()
