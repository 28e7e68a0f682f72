"""Helpers for testing applications that embed tornado-ws.

- :func:`make_token`: an HS256 token for a test secret.
- :class:`HubServer`: a :class:`~tornado_ws.Hub` listening on a free loopback port.
- A pytest plugin, opt-in with ``-p tornado_ws.testing`` (it needs pytest-tornasync's
  ``io_loop``): fixtures ``tornado_ws_secret``, ``tornado_ws_hub`` (override it to add
  hooks or settings), ``tornado_ws_server`` and ``tornado_ws_connect``.
- :class:`HubTestMixin` for ``tornado.testing.AsyncHTTPTestCase`` users.

Clients are :class:`tornado_ws.client.SessionClient` objects: ``await client.recv()``,
``await client.send(data)``, ``client.welcome``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import jwt
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.testing import bind_unused_port

from tornado_ws.client import Backoff, SessionClient, connect
from tornado_ws.hub import Hub

DEFAULT_SECRET = "tornado-ws-test-secret-" + "x" * 41  # 64 bytes: quiet for HS256..HS512
#: Tests should fail fast, not retry for minutes.
TEST_BACKOFF = Backoff(base=0.02, cap=0.2, max_attempts=5)


def make_token(secret: str, sub: str, org: str, ttl: float = 600, **claims: Any) -> str:
    """An HS256 JWT with ``sub``, ``org``, ``exp = now + ttl`` and any extra claims."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "org": org, "iat": now, "exp": now + int(ttl), **claims}, secret, algorithm="HS256")


def test_hub(**settings: Any) -> Hub:
    """A Hub for tests: the default test secret and no inbound rate limit unless given."""
    return Hub(**{"jwt_secret": DEFAULT_SECRET, "rate_limit": 0, **settings})


test_hub.__test__ = False  # type: ignore[attr-defined]


class HubServer:
    """Serves ``hub.routes(prefix)`` (plus any extra routes) on a free 127.0.0.1 port."""

    def __init__(self, hub: Hub, *, prefix: str = "", extra_routes: list[Any] | None = None) -> None:
        self.hub = hub
        self.prefix = prefix.rstrip("/")
        self.clients: list[SessionClient] = []
        app = tornado.web.Application([*hub.routes(prefix), *(extra_routes or [])])
        sock, self.port = bind_unused_port()
        self._sockets: list[socket.socket] = [sock]
        self.http = HTTPServer(app)

    def start(self) -> HubServer:
        self.http.add_sockets(self._sockets)
        return self

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port><prefix>``: what :func:`tornado_ws.client.connect` takes."""
        return f"ws://127.0.0.1:{self.port}{self.prefix}"

    def token(self, sub: str = "alice", org: str = "acme", **claims: Any) -> str:
        secret = self.hub.config.jwt_secret
        if secret is None:
            raise RuntimeError("HubServer.token needs a hub with jwt_secret")
        return make_token(secret, sub, org, **claims)

    async def connect(self, session: str, sub: str = "alice", org: str = "acme", **claims: Any) -> SessionClient:
        """A connected client (welcome received); closed by :meth:`stop`."""
        client = await connect(self.url, self.token(sub, org, **claims), session, backoff=TEST_BACKOFF)
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for client in self.clients:
            await client.close()
        self.http.stop()
        await self.http.close_all_connections()
        self.hub.stop()


class HubTestMixin:
    """Mix into ``tornado.testing.AsyncHTTPTestCase``; the app serves :meth:`make_hub`'s routes.

    ``self.hub`` is the Hub; ``await self.ws_connect(session, sub, org)`` gives a client.
    Override :meth:`make_hub` for hooks or settings and :meth:`extra_routes` for your own handlers.
    """

    hub: Hub
    jwt_secret = DEFAULT_SECRET
    get_http_port: Callable[[], int]
    io_loop: IOLoop

    def make_hub(self) -> Hub:
        return test_hub(jwt_secret=self.jwt_secret)

    def extra_routes(self) -> list[Any]:
        return []

    def get_app(self) -> tornado.web.Application:
        self.hub = self.make_hub()
        self._ws_clients: list[SessionClient] = []
        return tornado.web.Application([*self.hub.routes(), *self.extra_routes()])

    def token(self, sub: str = "alice", org: str = "acme", **claims: Any) -> str:
        return make_token(self.jwt_secret, sub, org, **claims)

    async def ws_connect(self, session: str, sub: str = "alice", org: str = "acme", **claims: Any) -> SessionClient:
        url = f"ws://127.0.0.1:{self.get_http_port()}"
        client = await connect(url, self.token(sub, org, **claims), session, backoff=TEST_BACKOFF)
        self._ws_clients.append(client)
        return client

    def tearDown(self) -> None:
        async def close_all() -> None:
            for client in self._ws_clients:
                await client.close()

        self.io_loop.run_sync(close_all)
        self.hub.stop()
        super().tearDown()  # type: ignore[misc]


try:
    import pytest
except ImportError:  # pragma: no cover - the plugin is only for pytest users
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def tornado_ws_secret() -> str:
        """The HS256 secret the test hub verifies."""
        return DEFAULT_SECRET

    @pytest.fixture
    def tornado_ws_hub(tornado_ws_secret: str) -> Hub:
        """The hub under test; override this fixture to add hooks or settings."""
        return test_hub(jwt_secret=tornado_ws_secret)

    @pytest.fixture
    def tornado_ws_server(tornado_ws_hub: Hub, io_loop: IOLoop) -> Iterator[HubServer]:
        """``tornado_ws_hub`` listening on a free port; ``.url``, ``.token()``, ``.connect()``."""
        server = HubServer(tornado_ws_hub).start()
        yield server
        io_loop.run_sync(server.stop)

    @pytest.fixture
    def tornado_ws_connect(tornado_ws_server: HubServer) -> Callable[..., Awaitable[SessionClient]]:
        """``await tornado_ws_connect(session, sub="alice", org="acme", **claims)`` → a connected client."""
        return tornado_ws_server.connect
