"""The ``websockets`` library (asyncio server) with its ``broadcast()``.

Same minimal protocol as tornado-ws for the benchmark: the room is the path,
a welcome frame on connect, every text frame relayed to the room, sender
included, but a ``signal`` frame (issue #17's cursors) to the others only, as
tornado-ws does; relayed as it comes, with no latest-wins. No token
verification; compression off, as in tornado-ws.

    python -m bench.peers.ws_broadcast --port 8002
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve

WELCOME = '{"type":"welcome"}'
SIGNAL = '{"type":"signal"'
rooms: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else "/"
    room = path.split("?", 1)[0].rsplit("/", 1)[-1]
    members = rooms.setdefault(room, set())
    members.add(ws)
    try:
        await ws.send(WELCOME)
        async for message in ws:
            if isinstance(message, str) and message.startswith(SIGNAL):
                broadcast([m for m in members if m is not ws], message)
            else:
                broadcast(members, message)
    finally:
        members.discard(ws)
        if not members:
            rooms.pop(room, None)


async def run(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(run(parser.parse_args().port))


if __name__ == "__main__":
    main()
