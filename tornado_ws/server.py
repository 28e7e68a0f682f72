"""Run a hub on a socket until SIGTERM/SIGINT, then shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket

from tornado.netutil import bind_sockets

from tornado_ws.config import Config
from tornado_ws.hub import Hub
from tornado_ws.transport.guard import GuardedHTTPServer

log = logging.getLogger("tornado_ws")

#: Seconds a client may take to send its request headers (cuts slowloris early).
HEADER_TIMEOUT = 30.0


class Server:
    """One listening tornado-ws process."""

    def __init__(self, config: Config, sockets: list[socket.socket] | None = None) -> None:
        self.config = config
        self._sockets = sockets
        self.hub = Hub(config)
        self.registry = self.hub.registry
        self.http = GuardedHTTPServer(
            self.hub.application(),
            idle_connection_timeout=HEADER_TIMEOUT,
            # Tornado buffers bodies up to 100 MB by default, before any handler (or token
            # check) runs, and waits for them forever: bound both.
            body_timeout=HEADER_TIMEOUT,
            max_body_size=config.max_message_size + 64 * 1024,
            registry=self.registry,
            lingering=self.hub.state.lingering,
        )
        self.port = config.port

    def start(self) -> None:
        sockets = self._sockets or bind_sockets(self.config.port, self.config.host)
        self.port = sockets[0].getsockname()[1]
        self.http.add_sockets(sockets)
        self.hub.start()
        # Connect the broker now rather than at the first client, so an unreachable Redis is
        # one log line at start and /readyz says 503 from the first probe.
        self.hub.state.start_broker()
        # Start-up objects (modules, app, config) never die: keep them out of every
        # collection, and collect young objects less often. With thousands of connections
        # the default thresholds spent most of the CPU in full collections (docs/performance.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
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


async def run(config: Config, sockets: list[socket.socket] | None = None) -> None:
    server = Server(config, sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start(): once "listening" is logged, a signal must already mean a clean shutdown.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server.start()
    await stop.wait()
    await server.shutdown()
    await server.hub.aclose()


def run_workers(config: Config) -> int:
    """Prefork ``config.workers`` processes sharing one listening socket; returns the exit code.

    The parent only forwards SIGTERM/SIGINT and waits; each child is a whole node
    (its own hub and Redis broker), so sessions span workers through Redis.
    """
    sockets = bind_sockets(config.port, config.host)
    children: list[int] = []
    for _ in range(config.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, measured through its own process
            code = 0
            try:
                asyncio.run(run(config, sockets))
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("tornado-ws supervising %d workers on port %d", config.workers, sockets[0].getsockname()[1])
    failed = 0
    while children:
        pid, status = os.wait()
        children.remove(pid)
        failed += os.waitstatus_to_exitcode(status) != 0
    return 1 if failed else 0
