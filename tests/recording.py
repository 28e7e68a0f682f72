"""Stand-ins for the core's I/O in tests: a Peer that records what it was sent, and a clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Hashable
from typing import Any

from tornado_ws.core.server_messages import OutFrame


class RecordingPeer:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._changed: asyncio.Event | None = None

    def send(self, frame: OutFrame) -> None:
        self.frames.append(json.loads(frame.text))
        if self._changed is not None:
            self._changed.set()

    def signal(self, slot: Hashable, frame: OutFrame) -> None:
        """Recorded like any frame (a recording never falls behind, so nothing is replaced)."""
        self.send(frame)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        if self._changed is not None:
            self._changed.set()

    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]

    def take(self) -> list[dict[str, Any]]:
        frames, self.frames = self.frames, []
        return frames

    def messages(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "message"]

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds, woken by each frame (brokers deliver asynchronously)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"condition not met; frames: {self.frames[-5:]}, closed: {self.closed}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class Clock:
    """A clock the test moves by hand (``clock.now += 61``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
