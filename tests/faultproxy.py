"""A fault-injecting TCP proxy for tests (asyncio, loopback only).

It forwards bytes between a client and a target port and can, on command,
``cut`` every live connection (RST, as a dead Wi-Fi looks to the server),
``stall`` forwarding (bytes are held, the connection stays up), ``hold_replies``
(only the server's bytes are held: what the client sends still arrives), ``delay``
each chunk, or refuse new connections (``refusing = True``: each is accepted and
reset at once, as a crashed server's port looks). ``accepted`` counts forwarded
connections, and :meth:`wait_accepted` waits for the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.delay = 0.0
        self.refusing = False
        self.accepted = 0
        self._accepting = asyncio.Event()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._replies_flowing = asyncio.Event()
        self._replies_flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(writer)
            return
        self.accepted += 1
        self._accepting.set()
        self._writers.update((writer, up_writer))
        for src, dst, gate in ((reader, up_writer, self._flowing), (up_reader, writer, self._replies_flowing)):
            task = asyncio.ensure_future(self._pump(src, dst, gate, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        gate: asyncio.Event,
        pair: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        try:
            while chunk := await src.read(65536):
                await self._flowing.wait()
                await gate.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(chunk)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in pair:
                self._close(w, reset=False)

    def _close(self, writer: asyncio.StreamWriter, *, reset: bool) -> None:
        self._writers.discard(writer)
        if reset:
            _reset(writer)
        elif not writer.is_closing():
            writer.close()

    async def wait_accepted(self, count: int) -> None:
        """Return once ``count`` connections in all have been forwarded."""
        while self.accepted < count:
            self._accepting.clear()
            await self._accepting.wait()

    def cut(self) -> int:
        """Reset every live connection, both sides; returns how many sockets were cut."""
        writers = list(self._writers)
        for writer in writers:
            self._close(writer, reset=True)
        return len(writers)

    def stall(self) -> None:
        self._flowing.clear()

    def hold_replies(self) -> None:
        self._replies_flowing.clear()

    def resume(self) -> None:
        self._flowing.set()
        self._replies_flowing.set()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    writer.transport.abort()
