"""What every handler of one hub shares: config, verifier, broker, metrics, hooks, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from tornado_ws.auth import TokenVerifier
from tornado_ws.brokers.base import Broker
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry
from tornado_ws.hooks import Hooks
from tornado_ws.metrics import Metrics
from tornado_ws.transport.websocket import Lingering, WebSocketConnection


def _nothing() -> None:
    return None


@dataclasses.dataclass
class AppState:
    config: Config
    verifier: TokenVerifier
    broker: Broker
    metrics: Metrics
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    #: Called on each accepted connection; starts the history sweeper on the running loop.
    start_housekeeping: Callable[[], None] = _nothing
    #: Set when shutdown starts: new handshakes get 503, /readyz answers 503.
    draining: bool = False
    #: Sockets refused at the handshake that are still closing (they count against the caps).
    lingering: Lingering = dataclasses.field(default_factory=Lingering)
    #: Open ``/ws`` connections, for the keepalive sweep and shutdown: the registry reaches a
    #: ``/ws/<id>`` connection through its one membership, but a ``/ws`` one may be in none.
    multiplexed: dict[WebSocketConnection, None] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        origins = self.config.allowed_origins
        self.allowed_origins = None if origins is None else frozenset(o.lower().rstrip("/") for o in origins)
        self._started: asyncio.Future[None] | None = None

    @property
    def registry(self) -> Registry:
        """This node's connections (the broker's local fan-out)."""
        return self.broker.registry

    def start_broker(self) -> None:
        """Start connecting the broker (once) without waiting for it."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.broker.start())

    @property
    def broker_ready(self) -> bool:
        """Whether the broker started (what lets a join skip :meth:`ensure_started`'s await)."""
        started = self._started
        return started is not None and started.done() and not started.cancelled() and started.exception() is None

    async def ensure_started(self) -> None:
        """Connect the broker once, on the running loop (the first connection or API call does it)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.broker.start())
        elif self._started.done():
            self._started.result()  # every handshake comes here: no shield Future once started
            return
        await asyncio.shield(self._started)
