"""A session's message stream: epoch, gapless seq, bounded history, resume. No I/O.

Recovery is a pure function of ``(epoch, since)`` against the stream: a client
either gets exactly the frames with ``seq > since`` or an honest "cannot".
"""

from __future__ import annotations

import collections
import dataclasses
import secrets
from collections.abc import Callable, Sequence

from tornado_ws.core.server_messages import OutFrame


def new_epoch() -> str:
    """A fresh random epoch; a stream that restarts from seq 1 gets a new one."""
    return secrets.token_hex(8)


@dataclasses.dataclass(frozen=True)
class Recovery:
    """The outcome of a resume request: ``frames`` is empty unless ``recovered``."""

    recovered: bool
    frames: Sequence[OutFrame] = ()


NOT_RECOVERED = Recovery(False)


class PublishedIds:
    """The message ids a stream published recently: ``(user_id, id) -> seq``, oldest first.

    Bounded twice: entries older than the idempotency window go, and past ``limit`` entries the
    oldest goes (a sender that floods ids forgets its own oldest, nobody else's memory grows).
    """

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Insertion order is time order: expiry and eviction both pop from the front.
        self._entries: dict[tuple[str, str], tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def seq_of(self, user_id: str, message_id: str, deadline: float) -> int | None:
        """The seq ``message_id`` of ``user_id`` got, if it was published after ``deadline``."""
        self.expire(deadline)
        hit = self._entries.get((user_id, message_id))
        return None if hit is None else hit[0]

    def add(self, user_id: str, message_id: str, seq: int, now: float) -> None:
        entries = self._entries
        while len(entries) >= self.limit:
            del entries[next(iter(entries))]
        entries[(user_id, message_id)] = (seq, now)

    def expire(self, deadline: float) -> None:
        """Forget ids published at or before ``deadline``."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][1] > deadline:
                return
            del entries[oldest]


class Stream:
    """One session's ordered stream of messages and the tail of it kept for resume."""

    def __init__(self, history_size: int, now: float, epoch_factory: Callable[[], str] = new_epoch) -> None:
        self.epoch = epoch_factory()
        self.last_seq = 0
        self.last_activity = now
        #: Created by the first publish with an id: a stream without ids pays nothing.
        self.ids: PublishedIds | None = None
        self._frames: collections.deque[tuple[int, OutFrame]] = collections.deque(maxlen=history_size)

    def __len__(self) -> int:
        return len(self._frames)

    def next_seq(self) -> int:
        """The seq the next message gets (it is only taken by :meth:`append`)."""
        return self.last_seq + 1

    def append(self, seq: int, frame: OutFrame, now: float) -> None:
        if seq != self.last_seq + 1:
            raise ValueError(f"seq {seq} does not follow {self.last_seq}")
        self.last_seq = seq
        self.last_activity = now
        if self._frames.maxlen:
            self._frames.append((seq, frame))

    def touch(self, now: float) -> None:
        self.last_activity = now

    def forget_history(self) -> None:
        """Drop the kept frames; seq and epoch go on, so old resume points fail honestly."""
        self._frames.clear()

    def recover(self, epoch: str | None, since: int | None) -> Recovery:
        """Frames a client that saw everything up to ``since`` in ``epoch`` missed."""
        if epoch is None or since is None or epoch != self.epoch:
            return NOT_RECOVERED
        if since < 0 or since > self.last_seq:
            return NOT_RECOVERED
        if since == self.last_seq:
            return Recovery(True)
        if not self._frames or self._frames[0][0] > since + 1:
            return NOT_RECOVERED
        start = since + 1 - self._frames[0][0]
        return Recovery(True, [frame for _, frame in list(self._frames)[start:]])
