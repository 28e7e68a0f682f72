"""The hub's own WebSocket code as an echo server, for Autobahn|Testsuite (../shared/autobahn/).

    python tests/autobahn_echo.py PORT [--embedded] [tornado-ws CLI flags...]

serves ``ws://127.0.0.1:PORT/ws/autobahn`` with the CLI (``tornado_ws.cli.main``: its
config, logging, server and upgrade fast path), or with ``--embedded`` with the hub's
routes on a plain Tornado ``HTTPServer`` (Tornado's HTTP/1 path and ``tornado_internals.take_socket``).
Either way the request goes through the hub's ``SessionHandler`` and ``_Upgrade``, and the
socket to a :class:`~tornado_ws.web.connection.Connection`, whose frames the hub's parser
reads. One thing differs, in this process only: ``SessionHandler.open`` checks no token and
joins no session (so no welcome or presence frame reaches the fuzzer) and turns the
connection into an :class:`EchoConnection`, which sends every message back, text as text
and binary as binary. Not a test module: tests/transport/test_autobahn_echo.py runs it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import tornado_ws
from tornado_ws import cli
from tornado_ws.core import frames
from tornado_ws.logs import configure_logging
from tornado_ws.web.connection import Connection
from tornado_ws.web.handler import SessionHandler

log = logging.getLogger("tornado_ws")

PATH = "/ws/autobahn"
#: The CLI requires a secret; no token is ever checked.
SECRET = "autobahn-echo-" + "s" * 50


class EchoConnection(Connection):
    """The hub's connection, its messages sent straight back."""

    __slots__ = ()

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.write(frames.encode(frames.TEXT, message.encode("utf-8")))
        else:
            self.write(frames.encode(frames.BINARY, message))


async def _open_as_echo(self: SessionHandler, *args: str, **kwargs: str) -> None:
    # Same slots, so the Connection the upgrade made can take the subclass's methods.
    self.connection.__class__ = EchoConnection


async def _serve_embedded(argv: list[str]) -> None:
    config, log_level = cli.config_from_args(argv)
    configure_logging(log_level, config.log_format)
    hub = tornado_ws.Hub(config)
    server = HTTPServer(tornado.web.Application(hub.routes()))
    sockets = bind_sockets(config.port, config.host)
    server.add_sockets(sockets)
    hub.start()
    port = sockets[0].getsockname()[1]
    log.info("tornado-ws listening on http://%s:%d/ (embedded in a Tornado HTTPServer)", config.host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await hub.aclose()


def main(args: list[str]) -> int:
    port, *rest = args
    embedded = "--embedded" in rest
    argv = ["--host", "127.0.0.1", "--port", port, "--jwt-secret", SECRET, *(a for a in rest if a != "--embedded")]
    SessionHandler.open = _open_as_echo  # type: ignore[method-assign]
    mode = "embedded in a Tornado HTTPServer" if embedded else "the CLI server"
    print(f"tornado-ws {tornado_ws.__version__} echo at {PATH}, {mode}: {' '.join(argv)}", flush=True)
    if embedded:
        asyncio.run(_serve_embedded(argv))
        return 0
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
