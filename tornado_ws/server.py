"""Run a hub on a socket until SIGTERM/SIGINT, then shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .config import Config
from .embedded import Hub

log = logging.getLogger("tornado_ws")

#: Seconds a client may take to send its request headers (cuts slowloris early).
HEADER_TIMEOUT = 30.0


class Server:
    """One listening tornado-ws process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub = Hub(config)
        self.registry = self.hub.registry
        self.http = HTTPServer(self.hub.application(), idle_connection_timeout=HEADER_TIMEOUT)
        self.port = config.port

    def start(self) -> None:
        sockets = bind_sockets(self.config.port, self.config.host)
        self.port = sockets[0].getsockname()[1]
        self.http.add_sockets(sockets)
        self.hub.start()
        url = f"http://{self.config.host}:{self.port}/"
        log.info("tornado-ws listening on %s%s", url, " (demo mode: open it in a browser)" if self.config.demo else "")

    async def shutdown(self) -> None:
        """Stop accepting, close every WebSocket with 1001, wait up to the timeout."""
        self.http.stop()
        self.hub.stop()
        log.info("shutting down: closing %d connection(s)", self.registry.connection_count)
        self.hub.close_all()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        while self.registry.connection_count and loop.time() < deadline:
            await asyncio.sleep(0.05)
        try:
            await asyncio.wait_for(self.http.close_all_connections(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("shutdown timeout reached with connections still open")
        log.info("shutdown complete")


async def run(config: Config) -> None:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start(): once "listening" is logged, a signal must already mean a clean shutdown.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server.start()
    await stop.wait()
    await server.shutdown()
