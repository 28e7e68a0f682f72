"""asyncio clients that hide reconnects: gapless, duplicate-free streams, acknowledged publishes.

Many sessions over one connection (``GET /ws``)::

    async with Client("ws://127.0.0.1:8888", token) as client:
        standup = await client.join("standup")      # waits for its welcome
        seq = await standup.publish({"text": "hi"}) # acked, applied exactly once
        await standup.set_presence({"typing": True})  # kept across reconnects
        standup.signal({"x": 10, "y": 20}, key="cursor")  # ephemeral: to the others, now or never
        async for frame in standup:                 # welcome / message / user_joined / signal / ...
            ...

One session per connection (``GET /ws/<session>``), as before::

    client = await connect("ws://127.0.0.1:8888", token, "standup")
    await client.send({"text": "hi"})
    async for frame in client:
        ...
    await client.close()

Both reconnect with exponential backoff and jitter and resume each session with its
``since``/``epoch``; both end a stream only loudly (:class:`SessionClosed`) or on your own
``close()``/``leave()``. Built on Tornado's own ``websocket_connect``; no other dependency.
``docs/client.md`` has every rule.
"""

from __future__ import annotations

from typing import Any

from tornado_ws.client.base import (
    Backoff,
    PresenceError,
    PublishError,
    SessionClosed,
    TokenSource,
    base_url,
    parse_frame,
    parse_welcome,
    retryable_status,
)
from tornado_ws.client.multiplex import Client, Connected
from tornado_ws.client.session import SessionClient
from tornado_ws.client.subscription import Subscription

__all__ = [
    "Backoff",
    "Client",
    "Connected",
    "PresenceError",
    "PublishError",
    "SessionClient",
    "SessionClosed",
    "Subscription",
    "TokenSource",
    "base_url",
    "connect",
    "parse_frame",
    "parse_welcome",
    "retryable_status",
]


async def connect(url: str, token: TokenSource, session: str, **options: Any) -> SessionClient:
    """Connect to ``url`` (``ws://host:port``) and join ``session``; returns once welcomed.

    ``token`` is a JWT, or a callable (plain or async) returning a fresh one
    for every (re)connect. ``options`` go to :class:`SessionClient` (``backoff``,
    ``connect_timeout``, ``ping_interval``, ``ping_timeout``, ``max_message_size``).
    Raises :class:`SessionClosed` if the server refuses for good or retries run out.
    """
    client = SessionClient(url, token, session, **options)
    await client.start()
    return client
