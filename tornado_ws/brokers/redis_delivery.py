"""What a RedisBroker node does with what its pub/sub connection receives: every seq of a
session once and in order, or a 1012 (a part of :class:`~tornado_ws.brokers.redis.RedisBroker`).

Frames arrive on each session's channel with a kind byte: ``m`` a sequenced message (epoch, seq,
frame), ``p`` a presence announcement, ``s`` a presence state, ``g`` a signal, ``k`` a kick. A
message whose seq skips one (pub/sub is at most once), or that arrives while the listener
reconnects, holds the session's live frames until its history fills the gap (``_resync``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from tornado_ws.brokers.base import BrokerUnavailable
from tornado_ws.brokers.redis_scripts import SessionKeys
from tornado_ws.core.registry import Membership, Registry, SessionKey
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import new_epoch
from tornado_ws.errors import CloseCode

log = logging.getLogger("tornado_ws.redis")


class OrderedDelivery:
    """Dispatch, in-order delivery and resync of one node's sessions (a mixin of RedisBroker)."""

    registry: Registry
    history_size: int
    ttl: int
    _channels: dict[bytes, SessionKey]
    _epochs: dict[SessionKey, str]
    _seen: dict[SessionKey, int]
    _held: dict[SessionKey, list[tuple[str, int, OutFrame]]]
    _resyncing: set[SessionKey]
    _waiting: dict[SessionKey, list[tuple[Membership, int]]]

    # The broker's own methods, which these use:
    _spawn: Callable[[Coroutine[Any, Any, None]], None]
    _call: Callable[[str, list[Any], list[Any]], Awaitable[Any]]
    leave: Callable[[Membership], Coroutine[Any, Any, None]]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        key = self._channels.get(channel)
        if key is None:
            return
        kind, body = data[:1], data[1:]
        if kind == b"m":
            epoch, seq_text, frame = body.split(b" ", 2)
            self._deliver(key, epoch.decode(), int(seq_text), OutFrame(frame.decode()))
        elif kind == b"p":
            version, exclude, frame = body.split(b" ", 2)
            event = json.loads(frame)
            self.registry.announce(
                key,
                event["type"],
                event["user_id"],
                event.get("name"),
                event["participant_count"],
                exclude.decode(),
                version=int(version),
            )
        elif kind == b"s":
            version, frame = body.split(b" ", 1)
            text = frame.decode()
            self.registry.queue_state(key, json.loads(text)["user_id"], OutFrame(text), version=int(version))
        elif kind == b"g":
            header, frame = body.split(b"\n", 1)
            sender, slot_key = json.loads(header)
            self.registry.signal(key, OutFrame(frame.decode()), sender=sender, slot_key=slot_key)
        elif kind == b"k":
            order = json.loads(body)
            for member in self.registry.local_members(key, order["u"]):
                self._spawn(self.leave(member))
                member.peer.close(order["c"], order["r"])

    def _deliver(self, key: SessionKey, epoch: str, seq: int, frame: OutFrame) -> None:
        if self._held:  # the hot path pays one truth test while no session is resyncing
            held = self._held.get(key)
            if held is not None:
                self._hold(key, held, (epoch, seq, frame))
                return
        known = self._epochs.get(key)
        if known is not None and epoch != known:
            self._restart(key, "the stream restarted in redis")
            return
        self._epochs[key] = epoch
        seen = self._seen.get(key)
        if seen is not None:
            if seq <= seen:
                return  # already delivered (a resync can overlap the live stream)
            if seq != seen + 1:
                # Frames were lost on the way (pub/sub is at most once): fetch them first.
                self._held[key] = [(epoch, seq, frame)]
                self._spawn(self._resync([key]))
                return
        self._seen[key] = seq
        self.registry.deliver(key, frame, seq=seq)
        if self._waiting:
            self._release_caught_up(key, seq)

    def _release_caught_up(self, key: SessionKey, seq: int) -> None:
        waiting = self._waiting.get(key)
        if waiting is None:
            return
        ready = [entry for entry in waiting if entry[1] <= seq]
        if not ready:
            return
        waiting[:] = [entry for entry in waiting if entry[1] > seq]
        if not waiting:
            del self._waiting[key]
        for member, after in ready:
            self.registry.release(member, after)

    def _hold(self, key: SessionKey, held: list[tuple[str, int, OutFrame]], item: tuple[str, int, OutFrame]) -> None:
        if len(held) >= self.history_size:
            # The held frames are newer than the gap's, so by now those have left the history too.
            self._restart(key, f"more than {self.history_size} frames arrived before its gap was filled")
            return
        held.append(item)

    def _restart(self, key: SessionKey, why: str) -> None:
        """Members lost frames nobody can give back: they must reconnect and reload."""
        log.warning("session=%s: %s; closing its members with 1012", key.session_id, why)
        for member in self.registry.local_members(key):
            member.peer.close(CloseCode.SERVICE_RESTART, "session stream restarted")
        # Closed members get nothing more; whoever joins next starts from its own snapshot.
        self._held.pop(key, None)
        self._epochs.pop(key, None)
        self._seen.pop(key, None)
        self._waiting.pop(key, None)

    def _hold_for_resync(self, channels: set[bytes]) -> None:
        """After a pub/sub reconnect: hold the sessions' live frames until history fills the gap."""
        keys = [key for key in map(self._channels.get, channels) if key is not None and key in self._epochs]
        for key in keys:
            self._held.setdefault(key, [])
        self._spawn(self._resync(keys))

    async def _resync(self, keys: Iterable[SessionKey]) -> None:
        """Fill the gap of each held session; at the first failure the heartbeat tries again."""
        for key in keys:
            if key in self._resyncing or key not in self._held:
                continue
            self._resyncing.add(key)
            try:
                await self._resync_one(key)
            except BrokerUnavailable:
                return
            finally:
                self._resyncing.discard(key)

    async def _resync_one(self, key: SessionKey) -> None:
        """Deliver the history after ``_seen``, then the held frames, each seq once, in order."""
        held, epoch, keys = self._held[key], self._epochs.get(key), SessionKeys.of(key)
        if keys.channel.encode() not in self._channels:
            del self._held[key]  # nobody here any more
            return
        if epoch is None:
            return  # a join has not taken its snapshot yet: the next heartbeat tries again
        since = self._seen.get(key, 0)
        snap = await self._call("SNAPSHOT", [keys.epoch, keys.seq, keys.history], [new_epoch(), since, self.ttl, epoch])
        if self._held.get(key) is not held:
            return  # restarted or left while we asked
        if not snap[2]:
            self._restart(key, "its stream restarted or outran the history while this node was away")
            return
        del self._held[key]
        for offset, raw in enumerate(snap[3]):
            self._deliver(key, epoch, since + 1 + offset, OutFrame(raw.decode()))
        # Through the gap check again: frames lost since the snapshot (the pub/sub dropped once
        # more) hold the rest for the heartbeat's next try, still within the hold's bound.
        for frame_epoch, seq, frame in held:
            if key not in self._epochs:
                return  # a held frame of a new epoch restarted the session
            self._deliver(key, frame_epoch, seq, frame)
