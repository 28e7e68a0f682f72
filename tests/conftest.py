"""Shared fixtures: a real server on a free port, real clients, token minting."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
import tornado.web
import websockets
from tornado.httpclient import HTTPClientError
from tornado.ioloop import IOLoop
from websockets.asyncio.client import ClientConnection

from tornado_ws.config import Config
from tornado_ws.hub import make_app
from tornado_ws.server import HEADER_TIMEOUT
from tornado_ws.transport.guard import GuardedHTTPServer
from tornado_ws.web.handler import SessionHandler

if TYPE_CHECKING:
    from tests.brokers.redis_server import RedisServer
    from tests.nodes import Nodes

# Our own test plugin, loaded the way applications opt in (`-p tornado_ws.testing`), but from
# here so that coverage, which starts before conftest files load, measures it.
pytest_plugins = ["tornado_ws.testing"]

SECRET = "test-secret-" + "0123456789abcdef" * 4
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


# -- CI: a skipped test proves nothing ------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which fails the run: {_skipped[:10]}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- the event loop -----------------------------------------------------------


@pytest.fixture
def io_loop() -> Iterator[IOLoop]:
    """pytest-tornasync's loop fixture, minus the deprecated make_current/clear_current."""
    loop = IOLoop(make_current=False)
    asyncio.set_event_loop(loop.asyncio_loop)  # type: ignore[attr-defined]
    yield loop
    asyncio.set_event_loop(None)
    loop.close(all_fds=True)


# -- tokens -------------------------------------------------------------------


def make_token(
    sub: str | None = "alice",
    org: str | None = "acme",
    *,
    secret: str = SECRET,
    ttl: float = 3600,
    algorithm: str = "HS256",
    **extra: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"exp": now + ttl, "iat": now}
    if sub is not None:
        payload["sub"] = sub
    if org is not None:
        payload["org"] = org
    payload.update(extra)
    return jwt.encode(payload, secret, algorithm=algorithm)


# -- the server under test ----------------------------------------------------


def test_config(**overrides: Any) -> Config:
    # No inbound rate limit unless a test is about it: most tests publish faster than 20/s.
    settings: dict[str, Any] = {"jwt_secret": SECRET, "ping_interval": 1.0, "ping_timeout": 1.0, "rate_limit": 0}
    settings.update(overrides)
    return Config(**settings)


test_config.__test__ = False  # type: ignore[attr-defined]

#: Raw-socket attackers never answer pings: keep the server's ping timeout out of their way
#: unless a test is about it.
QUIET_PINGS: dict[str, Any] = {"ping_interval": 60, "ping_timeout": 30}


@pytest.fixture
def config() -> Config:
    return test_config()


@pytest.fixture
def app(config: Config) -> Iterator[tornado.web.Application]:
    application = make_app(config)
    yield application
    if SessionHandler.registry is not None:
        SessionHandler.registry.reset()
    SessionHandler.registry = None


@pytest.fixture
def http_server(
    request: pytest.FixtureRequest, io_loop: IOLoop, http_server_port: tuple[socket.socket, int]
) -> Iterator[GuardedHTTPServer]:
    """pytest-tornasync's server fixture, but the server the CLI runs (guard.py: the upgrade fast
    path and the half-open guard); tornado_ws.testing.HubServer keeps Tornado's own HTTPServer."""
    application = request.getfixturevalue(request.config.option.app_fixture)
    state = application.settings.get("state")
    server = GuardedHTTPServer(
        application,
        registry=application.settings.get("registry"),
        lingering=state.lingering if state is not None else None,
        idle_connection_timeout=HEADER_TIMEOUT,
    )
    server.add_socket(http_server_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections, timeout=request.config.option.async_test_timeout)


@pytest.fixture
def port(http_server: Any, http_server_port: tuple[socket.socket, int]) -> int:
    return http_server_port[1]


@pytest.fixture
def registry(app: tornado.web.Application) -> Any:
    return app.settings["registry"]


class Client:
    """A real `websockets` client with JSON helpers and a per-frame timeout."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        assert isinstance(frame, dict)
        return frame

    async def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Next frame of type ``kind``, skipping presence noise in between."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def publish(self, data: Any) -> None:
        await self.send({"type": "message", "data": data})

    async def close(self) -> None:
        await self.ws.close()

    async def closed_with(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait until the server closes us; return (code, reason)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def assert_silent(self) -> None:
        """Prove nothing is queued for us: a ping round-trip returns only the pong."""
        await self.send({"type": "ping"})
        frame = await self.recv()
        assert frame == {"type": "pong"}, f"unexpected frame {frame}"


class MuxClient(Client):
    """A real client of ``/ws``: one socket, many sessions. ``connected`` is its first frame."""

    def __init__(self, ws: ClientConnection, connected: dict[str, Any]) -> None:
        super().__init__(ws)
        self.connected = connected

    async def join(self, session: str, **fields: Any) -> dict[str, Any]:
        """Join ``session``; return its welcome (any other frame first fails the test)."""
        await self.send({"type": "join", "session": session, **fields})
        welcome = await self.recv()
        assert welcome["type"] == "welcome" and welcome["session_id"] == session, welcome
        return welcome

    async def refused(self, session: str, **fields: Any) -> dict[str, Any]:
        """Join ``session`` expecting a refusal; return its ``left`` frame."""
        await self.send({"type": "join", "session": session, **fields})
        left = await self.recv()
        assert left["type"] == "left", left
        return left

    async def leave(self, session: str) -> dict[str, Any]:
        await self.send({"type": "leave", "session": session})
        return await self.recv_type("left")

    async def publish_in(self, session: str, data: Any, message_id: str | None = None) -> None:
        frame: dict[str, Any] = {"type": "message", "session": session, "data": data}
        if message_id is not None:
            frame["id"] = message_id
        await self.send(frame)

    async def recv_in(self, session: str, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Next frame of type ``kind`` in ``session``, skipping every other frame."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind and frame.get("session_id") == session:
                return frame


def ws_url(port: int, session: str, token: str | None = None, **query: Any) -> str:
    url = f"ws://127.0.0.1:{port}/ws/{session}"
    params = {**({"token": token} if token is not None else {}), **query}
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return url


class Clients:
    """Opens real WebSocket clients against one port and closes them all at teardown."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened: list[Client] = []

    async def connect(
        self,
        session: str,
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Client:
        ws = await websockets.connect(
            ws_url(self.port, session, token, **(query or {})),
            additional_headers=headers,
            max_queue=None,
            open_timeout=TIMEOUT,
            **kwargs,
        )
        client = Client(ws)
        self.opened.append(client)
        return client

    async def join(
        self, session: str, sub: str = "alice", org: str = "acme", *, query: dict[str, Any] | None = None, **claims: Any
    ) -> tuple[Client, dict[str, Any]]:
        """Connect with a fresh token; return the client and its welcome frame."""
        client = await self.connect(session, make_token(sub, org, **claims), query=query)
        welcome = await client.recv()
        assert welcome["type"] == "welcome", welcome
        return client, welcome

    async def mux(self, sub: str = "alice", org: str = "acme", *, token: str | None = None, **claims: Any) -> MuxClient:
        """A ``/ws`` connection with a fresh token (or ``token``); ``connected`` already read."""
        ws = await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws?token={token or make_token(sub, org, **claims)}",
            max_queue=None,
            open_timeout=TIMEOUT,
        )
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        connected = json.loads(raw)
        client = MuxClient(ws, connected)
        self.opened.append(client)
        assert connected["type"] == "connected", connected
        return client

    async def close_all(self) -> None:
        for client in self.opened:
            await client.close()


@pytest.fixture
def clients(port: int, io_loop: IOLoop) -> Iterator[Clients]:
    pool = Clients(port)
    yield pool
    io_loop.run_sync(pool.close_all)


async def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll a cheap in-process condition (used only where no event exists)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server per test module, flushed by whoever needs it clean."""
    # Imported here: redis_server.py imports tornado_ws.testing, which pytest must load as a
    # plugin (pytest_plugins below) before anything imports it.
    from tests.brokers.redis_server import RedisServer, require_redis_server

    require_redis_server()
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(params=["memory", "redis"])
def make_nodes(request: pytest.FixtureRequest, io_loop: IOLoop) -> Iterator[Callable[..., Nodes]]:
    """Build :class:`tests.nodes.Nodes` with these settings: once on memory, once on Redis."""
    from tests.nodes import Nodes  # it builds on this module's clients

    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    made: list[Nodes] = []

    def make(**settings: Any) -> Nodes:
        made.append(Nodes(redis, **settings))
        return made[-1]

    yield make
    for nodes in made:
        io_loop.run_sync(nodes.close)


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever the test throws at the server, no handler crashes: no ERROR record may appear.

    Modules ask for it with ``pytestmark = pytest.mark.usefixtures("no_errors_logged")``;
    tests/security/conftest.py applies it to the whole attack catalogue."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "errors logged: " + "; ".join(f"{r.name}: {r.getMessage()[:200]}" for r in errors)


def raise_fd_limit(wanted: int) -> None:
    """Let this process hold ``wanted`` descriptors (tests that open hundreds of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted, "cannot raise the fd limit for this test"


# -- plain HTTP ---------------------------------------------------------------------


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A blocking GET (run it with ``asyncio.to_thread`` against an in-process server): (status, body)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


async def call(
    http: Any, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """One HTTP API request through pytest-tornasync's ``http_server_client``: (status, JSON answer)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if method == "POST" and payload is None:
        payload = b""
    try:
        response = await http.fetch(path, method=method, headers=headers, body=payload)
    except HTTPClientError as exc:
        assert exc.response is not None
        response = exc.response
    assert response.headers["Content-Type"].startswith("application/json"), response.body[:200]
    return response.code, json.loads(response.body)


# -- the CLI as a subprocess ----------------------------------------------------

_LISTENING = re.compile(rb"listening on http://[^:]+:(\d+)/")


class ServerProcess:
    """``python -m tornado_ws ...`` as users start it; stderr is captured for log checks."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        python: str = sys.executable,
        cwd: Path = ROOT,
        fd_limit: int | None = None,
    ) -> None:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tornado-ws-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        full_env = {**os.environ, **(env or {})}
        command = [python, "-m", "tornado_ws", "--port", "0", *args]
        if fd_limit is not None:
            # The server's own descriptor limit, set the way a shell's `ulimit -n` sets it.
            command = ["/bin/sh", "-c", f'ulimit -n {fd_limit} && exec "$0" "$@"', *command]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes())
            if match:
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.output()}")
            time.sleep(0.02)
        raise AssertionError("server did not start: " + self.output())

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout)
        self._log.close()
        return code


@pytest.fixture
def cli_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    marker = request.node.get_closest_marker("server_args")
    args = list(marker.args) if marker else ["--jwt-secret", SECRET]
    server = ServerProcess(args)
    yield server
    server.stop()
    server.log_path.unlink(missing_ok=True)
