"""The WebSocket endpoints ``/ws/<session_id>`` and ``/ws``: thin adapters over the hub.

``get`` enforces the process-wide limits and the origin rule (:func:`origin_allowed`, the
same on every Tornado version) before the upgrade; Tornado checks the upgrade headers;
the handler writes the 101, hands the socket to a
:class:`~tornado_ws.web.connection.Connection` (the registry's peer), and ``open``
authenticates and joins. The 101 leaves with the welcome (or with a refusal's close
frame) when ``open`` is done. The handler, its request and Tornado's stream are
dropped after that: a connection costs only its Connection (docs/performance.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tornado.httputil import HTTPHeaders
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from tornado_ws import hooks
from tornado_ws.auth import AuthError, Claims
from tornado_ws.brokers.base import BrokerUnavailable, JoinRefused
from tornado_ws.core.protocol import valid_session_id
from tornado_ws.core.registry import Registry
from tornado_ws.errors import CloseCode
from tornado_ws.transport.tornado_internals import accepting_protocol, take_socket
from tornado_ws.transport.upgrade import UpgradeConnection
from tornado_ws.web import joining
from tornado_ws.web.base import ApiError, RedactedLoggingMixin
from tornado_ws.web.connection import Connection
from tornado_ws.web.multiplex import MultiplexConnection
from tornado_ws.web.state import AppState

log = logging.getLogger("tornado_ws")


#: A resume point on the wire: ASCII digits only (``str.isdigit`` also accepts ``²`` and ``٣``,
#: which ``int()`` then refuses or reads), at most 18 so it fits Redis's 64-bit counter.
_WIRE_INT = re.compile(r"[0-9]{1,18}")


def _int_or_none(value: str | None) -> int | None:
    if value is None or _WIRE_INT.fullmatch(value) is None:
        return None
    return int(value)


def _tokens(headers: HTTPHeaders, name: str) -> list[str]:
    return [token.strip().lower() for token in headers.get(name, "").split(",")]


def origin_allowed(headers: HTTPHeaders, allowed: frozenset[str] | None, trusted: Iterable[str] | None = None) -> bool:
    """Whether a WebSocket upgrade with these headers may proceed, by its ``Origin``.

    No ``Origin``: a service, allowed (a browser always sends one on a WebSocket, and one that
    says the request is cross-site without it is refused, as Tornado 6.6 does). With an
    allow-list (``--allowed-origins``): exactly its entries (lower-case, ``*`` for any),
    whatever the Host. Without one: the Origin's ``host[:port]`` must equal the Host header,
    or the origin be in the application's ``trusted_origins`` setting. ``Sec-Fetch-Site``
    decides nothing else: Tornado 6.6 skips ``check_origin`` when it says ``same-origin``.
    """
    origin = headers.get("Origin")
    if origin is None:
        return headers.get("Sec-Fetch-Site") in (None, "same-origin", "none")
    if allowed is not None:
        return "*" in allowed or origin.lower() in allowed
    return urlsplit(origin).netloc.lower() == headers.get("Host", "").lower() or origin in (trusted or ())


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "


async def _accept(handler: WebSocketHandler) -> None:
    """Tornado's upgrade checks passed: write the 101 and hand the socket to a Connection."""
    assert isinstance(handler, SessionHandler)
    headers = handler.request.headers
    key = headers.get("Sec-WebSocket-Key")
    if not key or not headers.get("Host"):
        # What WebSocketProtocol13 answers when a header it needs is missing.
        handler.set_status(400)
        handler.finish("Missing/Invalid WebSocket headers")
        return
    # The 101 is written here rather than by handler.finish(): Tornado's response path
    # costs more than the rest of the upgrade, and the Connection sends these bytes
    # together with the welcome. No subprotocols, no compression (deflate costs
    # ~300 KiB per connection).
    accept = WebSocketProtocol13.compute_accept_value(key)
    response = _SWITCHING + accept.encode("ascii") + b"\r\n\r\n"
    handler.set_status(101)
    detached: Any = handler.detach()
    if isinstance(detached, UpgradeConnection):  # the server's fast path (guard.py)
        sock, unread, registered = detached.take_socket(), b"", detached.registered
    else:
        sock, unread, registered = take_socket(detached)
    handler.application.log_request(handler)
    connection = handler.connection = handler.connection_class(
        handler.state, sock, unread=unread, head=response, registered=registered
    )
    try:
        await handler.open(*handler.path_args, **handler.path_kwargs)
    except Exception:
        log.exception("open failed")
        connection.close(CloseCode.INTERNAL_ERROR, "internal error")
    # WebSocketHandler keeps its UI-module cycle until on_close; ours is done with it at the
    # 101, and breaking it lets the handler die by refcount instead of the cyclic collector.
    handler.ui = None  # type: ignore[assignment]
    connection.start()


class SessionHandler(RedactedLoggingMixin, WebSocketHandler):
    """One WebSocket connection to one session."""

    #: The class-level session map: the registry this handler's joins register in. Each Hub
    #: serves its own subclass bound to its registry (``Hub.routes()``), so two hubs in one
    #: process never share it; ``SessionHandler.registry`` itself is the most recent hub's, what a
    #: single-hub embedder or a test reaches (``SessionHandler.registry.reset()``).
    registry: ClassVar[Registry]

    connection: Connection
    #: What the socket becomes after the 101.
    connection_class: ClassVar[type[Connection]] = Connection

    def initialize(self, state: AppState) -> None:
        self.state = state
        self.broker = state.broker
        self.config = state.config

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None  # Tornado answers 426 with the version we speak
        return accepting_protocol(_accept)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Tornado answers bad UTF-8 in the path with a 400 before the upgrade;
        # we want every bad session id refused the same way: close 1008.
        return value.decode("utf-8", errors="replace")

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.state.draining:
            self.state.metrics.refused.labels("shutting_down").inc()
            raise ApiError(503, "shutting_down", "server is shutting down; reconnect elsewhere")
        lingering = self.state.lingering
        # Sockets still closing after a refusal count too, and give way first: a flood of bad
        # handshakes must not hold the room a good client needs.
        while lingering and self.registry.connection_count + len(lingering) >= self.config.max_connections:
            lingering.evict_oldest()
        if self.registry.connection_count >= self.config.max_connections:
            self.state.metrics.refused.labels("max_connections").inc()
            raise ApiError(503, "max_connections", "server is at its connection limit; try again later")
        headers = self.request.headers
        # Tornado answers a request that is no upgrade at all (400) before it looks at the origin.
        is_upgrade = headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in _tokens(headers, "Connection")
        if is_upgrade and not origin_allowed(headers, self.state.allowed_origins, self.settings.get("trusted_origins")):
            self.state.metrics.refused.labels("origin").inc()
            log.info("refused origin=%r peer=%s", headers.get("Origin", "")[:200], self.request.remote_ip)
            self.set_status(403)
            self.finish("Cross origin websockets not allowed")  # Tornado's own answer
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        # get() has applied the origin rule already (origin_allowed), the same way on every
        # Tornado version: since 6.6 Tornado calls this only for requests that look cross-origin,
        # so an allow-list here would never see a same-host Origin.
        return True

    def _token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        # The raw value: get_query_argument's decoding and control-character scrub cost more
        # than the rest of this method, and a token is ASCII or it is invalid anyway.
        values = self.request.query_arguments.get("token")
        return values[-1].decode("utf-8", "replace").strip() if values else None

    def _refuse(self, session_id: str, refusal: joining.Refusal) -> None:
        self.state.metrics.refused.labels(refusal.label).inc()
        log.info("refused session=%r reason=%s peer=%s", session_id[:140], refusal.reason, self.request.remote_ip)
        self.connection.refuse(refusal.code, refusal.reason, self.state.lingering)

    async def open(self, *args: str, **kwargs: str) -> None:
        connection = self.connection
        session_id = args[0] if args else ""
        # The session id first: a bad one is refused without verifying anything.
        if not valid_session_id(session_id, self.config.max_session_id_length):
            self._refuse(session_id, joining.INVALID_SESSION_ID)
            return
        claims = self._verified(session_id)
        if claims is None:
            return
        refusal = await joining.authorize(self.state, claims, session_id)
        if refusal is not None:
            self._refuse(session_id, refusal)
            return
        if connection.closing:
            return  # closed (shutdown, say) while the hook ran
        self.state.start_housekeeping()
        connection.authenticated(claims)
        member = connection.membership_for(claims, session_id)
        refusal = await joining.join(
            self.state,
            member,
            epoch=self.get_query_argument("epoch", None),
            since=_int_or_none(self.get_query_argument("since", None)),
        )
        if refusal is not None:
            connection.forget(member)
            self._refuse(session_id, refusal)
            return
        log.info(
            "connect session=%s org=%s user=%s conn=%s", session_id, claims.org_id, claims.user_id, member.connection_id
        )
        await hooks.observe(self.state.hooks.on_join, "on_join", claims, session_id)

    def _verified(self, session_id: str) -> Claims | None:
        """The token's claims, or None after refusing the connection (1008)."""
        try:
            return self.state.verifier.verify(self._token())
        except AuthError as exc:
            label = exc.reason.replace(" ", "_")
            self._refuse(session_id, joining.Refusal(CloseCode.POLICY_VIOLATION, exc.reason, label))
            return None


class MultiplexHandler(SessionHandler):
    """``/ws``: one WebSocket connection, in as many sessions as its frames join."""

    connection_class = MultiplexConnection
    connection: MultiplexConnection

    async def open(self, *args: str, **kwargs: str) -> None:
        connection = self.connection
        claims = self._verified("")
        if claims is None:
            return
        self.state.start_housekeeping()
        try:
            await self.state.ensure_started()
            await self.broker.connect(claims.org_id, claims.user_id, connection.connection_id)
        except BrokerUnavailable as exc:
            log.warning("broker unavailable at connect: %s", exc)
            self._refuse("", joining.UNAVAILABLE)
            return
        except JoinRefused as exc:
            self._refuse("", joining.Refusal.of(exc))
            return
        connection.connected(claims)
        if self.state.draining:  # shutdown began while the broker counted it: close_all missed us
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        log.info("connect org=%s user=%s conn=%s", claims.org_id, claims.user_id, connection.connection_id)
