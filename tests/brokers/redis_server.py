"""A real redis-server on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from tornado_ws.testing import HubServer

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` in a temp dir. ``persistent`` keeps data across :meth:`restart` (AOF)."""

    def __init__(self, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.dir = Path(tempfile.mkdtemp(prefix="tornado-ws-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "no",
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        """Forget every key: a module-scoped server, clean for the next test."""
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


#: Presence-hash entries no Lua script or Python decoder may choke on (docs/security.md, review 1).
GARBAGE = {
    "g-text": b"not json",
    "g-surrogate": b'{"n":"node-a","u":"x","m":"\\ud83d"}',  # cjson refuses the escape
    "g-bytes": b'{"n":"node-a","u":"\xff"}',  # not UTF-8
    "g-number": b'{"n":"node-a","u":5}',
    "g-list": b"[1,2]",
    "g-name": b'{"n":"node-a","u":"ok","m":5}',
    "g-deep": b"[" * 5000 + b"]" * 5000,
}


def require_redis_server() -> None:
    """Under CI=true a missing redis-server must fail, not skip."""
    if not os.access(REDIS_SERVER, os.X_OK):
        import pytest

        message = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


async def stop_nodes(nodes: Iterable[HubServer]) -> None:
    """Stop in-process nodes and disconnect their brokers (each node a HubServer)."""
    for node in nodes:
        await node.stop()
        await node.hub.aclose()
