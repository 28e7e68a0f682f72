"""The naive Tornado pattern, as in Tornado's chat demo: a class-level registry
and ``write_message`` per client (a frame built and a Future made for each).

Same minimal protocol as tornado-ws for the benchmark: the room is the path,
a welcome frame on connect, every text frame relayed to the room, sender
included, but a ``signal`` frame (issue #17's cursors) to the others only, as
tornado-ws does; relayed as it comes, with no latest-wins. No token
verification (tornado-ws verifies its JWTs).

    python -m bench.peers.naive_tornado --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import ClassVar

import tornado.web
import tornado.websocket

log = logging.getLogger("naive")
WELCOME = '{"type":"welcome"}'
SIGNAL = '{"type":"signal"'


class RoomHandler(tornado.websocket.WebSocketHandler):
    rooms: ClassVar[dict[str, set[RoomHandler]]] = {}

    def open(self, room: str) -> None:
        self.room = room
        self.rooms.setdefault(room, set()).add(self)
        self.write_message(WELCOME)

    def on_message(self, message: str | bytes) -> None:
        # The chat demo's send_updates(): one write_message per waiter.
        skip = self if isinstance(message, str) and message.startswith(SIGNAL) else None
        for waiter in self.rooms.get(self.room, ()):
            if waiter is skip:
                continue
            try:
                waiter.write_message(message)
            except tornado.websocket.WebSocketClosedError:
                pass
            except Exception:
                log.exception("error sending message")

    def on_close(self) -> None:
        members = self.rooms.get(self.room)
        if members is not None:
            members.discard(self)
            if not members:
                del self.rooms[self.room]


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"/ws/([^/?]+)", RoomHandler)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
