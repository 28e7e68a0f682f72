"""A broken or hostile WebSocket server for client tests: it follows a script, one reply per attempt.

    server = await HostileServer(lambda n: Reply(frames=[welcome()])).start()
    ...                      # point a client at server.url; server.attempts has each attempt's time
    await server.stop()

Built on the `websockets` server, so the bytes on the wire are a real peer's, not a mock's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the server does with one connection attempt."""

    #: 101 upgrades; anything else refuses the handshake with that HTTP status.
    status: int = 101
    #: Text frames sent in order after the upgrade.
    frames: Sequence[str] = ()
    #: Seconds before closing after the frames; ``None`` keeps the connection open.
    close_after: float | None = 0.0
    close_code: int = 1000


def welcome(seq: object = 0, epoch: object = "e1", **fields: Any) -> str:
    """A welcome frame; ``seq`` and ``epoch`` may be wrong on purpose."""
    frame: dict[str, Any] = {"type": "welcome", "session_id": "room", "user_id": "alice", "org_id": "acme"}
    frame.update(connection_id="c", participants=[], participant_count=0, seq=seq, epoch=epoch, recovered=False)
    return json.dumps({**frame, **fields})


class HostileServer:
    """Serves ``script(n)`` to the n-th connection attempt (0-based) on a free 127.0.0.1 port."""

    def __init__(self, script: Callable[[int], Reply]) -> None:
        self.script = script
        #: ``loop.time()`` of each handshake request, in order.
        self.attempts: list[float] = []
        self._replies: dict[ServerConnection, Reply] = {}
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> HostileServer:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._request, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.attempts)]

    def _request(self, connection: ServerConnection, request: Request) -> Response | None:
        reply = self.script(len(self.attempts))
        self.attempts.append(asyncio.get_running_loop().time())
        if reply.status != 101:
            return connection.respond(http.HTTPStatus(reply.status), "refused\n")
        self._replies[connection] = reply
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        reply = self._replies.pop(connection)
        for frame in reply.frames:
            await connection.send(frame)
        if reply.close_after is None:
            await connection.wait_closed()
            return
        await asyncio.sleep(reply.close_after)
        await connection.close(reply.close_code)
