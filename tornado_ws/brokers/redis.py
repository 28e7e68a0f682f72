"""RedisBroker: one session across many processes, with the guarantees of one.

- Order: a Lua script INCRs the session's counter, appends to its capped
  history list and PUBLISHes, in one step. Every node receives the session's
  channel on one pub/sub connection, so every node sees the same order.
- Join/resume: the node subscribes (and waits for Redis to confirm), holds
  live frames for the new member, takes an atomic snapshot (epoch, last seq,
  missed frames), sends welcome + replay, then releases held frames newer
  than the snapshot: no gap, no duplicate, whichever node the client left.
- Presence: a hash per session of connection → {node, user, name}; nodes
  heartbeat a key with a TTL, and any live node reaps the entries of a node
  whose key expired (crash), announcing ``user_left`` once.
- Faults: commands fail fast (short timeouts, no retries) as
  :class:`BrokerUnavailable`; pub/sub reconnects with backoff and resubscribes.
  Until the gap is filled from history, a session's live frames are held (at
  most ``history_size``); a live frame that skips a seq starts the same resync.
  A member sees every seq in order or is closed with 1012 (the stream restarted,
  or the history no longer reaches): never a silent jump.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tornado_ws.brokers import redis_presence, redis_scripts
from tornado_ws.brokers.base import Broker, BrokerUnavailable, JoinRefused, Published, SessionLimit
from tornado_ws.brokers.redis_delivery import OrderedDelivery
from tornado_ws.brokers.redis_scripts import SessionKeys
from tornado_ws.core import server_messages as messages
from tornado_ws.core.registry import Membership, Registry, SessionKey
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import Recovery, new_epoch

log = logging.getLogger("tornado_ws.redis")
T = TypeVar("T")

#: Seconds between node heartbeats; a node silent for PRESENCE_TTL is dead.
HEARTBEAT = 1.0
PRESENCE_TTL = 5.0
SUBSCRIBE_TIMEOUT = 3.0
#: Seconds a node reuses a big session's truncated roster for the welcomes of its joins.
ROSTER_CACHE_SECONDS = 1.0
#: Redis connections per node for commands (pub/sub has its own).
POOL_SIZE = 256


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _safe_url(url: str) -> str:
    """``url`` without its password: log lines must not carry secrets."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:[redacted]@", url)


def _encoded(values: list[str | int]) -> list[bytes | int]:
    """Script keys and args as bytes: text that cannot be encoded fails here, before any state changes."""
    return [value.encode() if isinstance(value, str) else value for value in values]


#: What the JOIN script's refusals mean.
_REFUSALS: dict[bytes, Callable[[], JoinRefused]] = {
    b"banned": JoinRefused.banned,
    b"user": JoinRefused.user_connections,
    b"sessions": SessionLimit,
}


class RedisBroker(OrderedDelivery, Broker):
    def __init__(
        self,
        url: str,
        registry: Registry,
        *,
        history_size: int = 100,
        history_ttl: float = 300.0,
        idempotency_window: float | None = None,
        node_id: str | None = None,
        clock: Callable[[], float] = time.time,
        pubsub_url: str | None = None,
    ) -> None:
        """``url`` serves commands; ``pubsub_url`` (default: ``url``) the pub/sub connection,
        for a deployment that routes them apart (and for fault tests that cut one of them)."""
        super().__init__(registry)
        self.url = url
        self.node_id = node_id or secrets.token_hex(6)
        self.history_size = history_size
        self.ttl = max(1, int(history_ttl))
        #: Milliseconds a message id is remembered (None: history_ttl; 0: duplicates not detected).
        window = history_ttl if idempotency_window is None else idempotency_window
        self.window_ms = max(1, int(window * 1000)) if window > 0 else 0
        self._clock = clock
        options: dict[str, Any] = {
            "socket_connect_timeout": 1.0,
            "retry": Retry(NoBackoff(), 0),  # _do() decides about retrying, and fails fast
        }
        # redis-py's default pool refuses the 101st concurrent command (MaxConnectionsError);
        # a burst of publishes must queue briefly for a connection instead of failing.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=2.0, socket_timeout=2.0, **options
        )
        self.redis = aioredis.Redis(connection_pool=self._pool)
        self._pubsub_url = pubsub_url or url
        self._pubsub_client = aioredis.Redis.from_url(self._pubsub_url, **options)
        self._scripts = {
            name: self.redis.register_script(getattr(redis_scripts, name))
            for name in ("PUBLISH", "SNAPSHOT", "JOIN", "LEAVE", "ADMIT", "STATE", "REAP", "KEEP")
        }
        self._pubsub: Any = None
        self._channels: dict[bytes, SessionKey] = {}
        self._confirmed: dict[bytes, asyncio.Event] = {}
        self._epochs: dict[SessionKey, str] = {}
        self._seen: dict[SessionKey, int] = {}
        #: Memberships joined or joining through this node (a /ws connection has one per session).
        self._active: set[Membership] = set()
        self._unfinished_leaves: list[Membership] = []
        #: /ws connections whose release from the user's count failed: (org, user, connection id).
        self._unfinished_disconnects: list[tuple[str, str, str]] = []
        #: Sessions whose gap is being filled from history; their live frames wait here as
        #: (epoch, seq, frame). Empty unless the pub/sub reconnected or a seq was skipped.
        self._held: dict[SessionKey, list[tuple[str, int, OutFrame]]] = {}
        self._resyncing: set[SessionKey] = set()
        #: Members whose snapshot is newer than what the listener has delivered: (member, its
        #: snapshot's seq), released by _deliver once the live stream reaches it.
        self._waiting: dict[SessionKey, list[tuple[Membership, int]]] = {}
        #: Big sessions' truncated rosters (expiry, participants): a join into a session over
        #: --presence-roster-limit reads about that many entries from Redis once a second, not each time.
        self._rosters: dict[SessionKey, tuple[float, list[dict[str, Any]], int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._closed = False
        self.connected = asyncio.Event()
        self._ever_connected = False
        self._start_failed = False

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._heartbeat())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), SUBSCRIBE_TIMEOUT)

    async def close(self) -> None:
        self._closing = True
        if self._background:
            await asyncio.wait(list(self._background), timeout=2.0)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError, BrokerUnavailable):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(redis_scripts.node_alive(self.node_id))
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        self._closed = True
        await self.redis.aclose()
        await self._pool.disconnect()
        await self._pubsub_client.aclose()
        # PubSub.aclose closes its socket without waiting (redis-py #3941); give the
        # transport the loop passes it needs to finish before anyone closes the loop.
        for _ in range(3):
            await asyncio.sleep(0)

    async def healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 1.0)) and self.connected.is_set()
        except (RedisError, OSError, TimeoutError):
            return False

    async def _do(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis step; BrokerUnavailable if Redis cannot be reached.

        After a Redis restart every idle pooled connection is dead: on a connection
        error we drop them all and try once more with a fresh one.
        """
        for attempt in range(2):
            if self._closed:
                # After close() a late step (a leave finishing) must not reopen a connection.
                raise BrokerUnavailable("broker closed")
            try:
                return await step()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if attempt:
                    raise BrokerUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None
                await self.redis.connection_pool.disconnect(inuse_connections=False)
            except RedisError as exc:
                raise BrokerUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        return await self._do(lambda: self._scripts[script](keys=keys, args=args))

    # -- the Broker interface -----------------------------------------------------------

    async def join(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        key, keys = member.key, SessionKeys.of(member.key)
        registry = self.registry
        if member.counts_connection and registry.org_full(key.org_id):
            raise JoinRefused.org_connections()  # per process; no await until attach() counts this one
        # Everything that can fail is computed before Redis or the registry changes: a claim no
        # frame can carry raises here, not after its presence entry was written.
        messages.presence_frame_parts(
            "user_joined", session_id=key.session_id, user_id=member.user_id, name=member.name
        )
        script_keys = _encoded(
            [
                keys.epoch,
                keys.seq,
                keys.history,
                keys.presence,
                redis_scripts.node_sessions(self.node_id),
                redis_scripts.org_sessions(key.org_id),
                redis_scripts.user_connections(key.org_id, member.user_id),
                redis_scripts.ban(key, member.user_id),
                keys.users,
                keys.channel,
                keys.presence_version,
            ]
        )
        cached = self._cached_roster(key)  # taken now: it may expire while the script runs
        script_args = _encoded(
            [
                new_epoch(),
                -1 if since is None else since,
                self.ttl,
                epoch or "",
                member.connection_id,
                redis_presence.entry_json(self.node_id, member.user_id, member.name),
                member.user_id,
                json.dumps(list(key)),
                self.node_id,
                key.session_id,
                registry.max_connections_per_user if member.counts_connection else -1,
                registry.max_sessions_per_org,
                registry.roster_limit,
                "0" if cached is not None else "1",
                *messages.presence_frame_parts(
                    "user_joined", session_id=key.session_id, user_id=member.user_id, name=member.name
                ),
            ]
        )
        self._active.add(member)
        registry.attach(member)
        try:
            await self._subscribe(key)
            result = await self._call("JOIN", script_keys, script_args)
        except (BrokerUnavailable, RedisError, OSError) as exc:
            self._active.discard(member)
            self._detach(member)
            raise BrokerUnavailable(str(exc)) from None
        if len(result) == 1:  # refused: the script changed nothing
            self._active.discard(member)
            self._detach(member)
            raise _REFUSALS[result[0]]()
        entries, snap, count, version = result  # the script announced a first connection itself
        if member not in self._active:  # it left while we waited on Redis
            await self._presence_leave(member)
            return Recovery(False)
        stream_epoch, last_seq, recovered, frames = snap[0].decode(), int(snap[1]), bool(snap[2]), snap[3]
        self._epochs.setdefault(key, stream_epoch)
        seen = self._seen.get(key)
        if seen is None:  # the first member here: the live stream starts after its snapshot
            self._seen[key] = seen = last_seq
        limit = registry.roster_limit
        if count <= limit:
            participants, _ = redis_presence.roster(entries)
        elif entries:
            participants, _ = redis_presence.roster(entries, limit)
            self._rosters[key] = (self._clock() + ROSTER_CACHE_SECONDS, participants, version)
        else:
            # A welcome from the cached roster shows the presence changes up to the cache's version.
            participants, version = cached or ([], 0)
        member.peer.send(
            messages.welcome_frame(
                session_id=key.session_id,
                user_id=member.user_id,
                org_id=key.org_id,
                connection_id=member.connection_id,
                participants=participants,
                participant_count=count if count > limit else None,
                seq=last_seq,
                epoch=stream_epoch,
                recovered=recovered,
            )
        )
        replay = [OutFrame(raw.decode()) for raw in frames]
        for frame in replay:
            member.peer.send(frame)
        member.presence_version = version
        if seen >= last_seq:
            self.registry.release(member, last_seq)
        else:
            # The listener is behind this snapshot: frames up to last_seq are still on their way to
            # the members already here. Never skip them (they would lose them); hold the newcomer
            # until they pass, so it gets each seq after its snapshot once.
            self._waiting.setdefault(key, []).append((member, last_seq))
        return Recovery(recovered, replay)

    async def connect(self, org_id: str, user_id: str, connection_id: str) -> None:
        registry = self.registry
        if registry.org_full(org_id):
            raise JoinRefused.org_connections()
        registry.count_connection(org_id, user_id, +1)  # before the await: the per-process cap holds
        user = redis_scripts.user_connections(org_id, user_id)
        try:
            admitted = await self._call(
                "ADMIT", _encoded([user]), _encoded([connection_id, self.node_id, registry.max_connections_per_user])
            )
        except BaseException:
            registry.count_connection(org_id, user_id, -1)
            raise
        if not admitted:
            registry.count_connection(org_id, user_id, -1)
            raise JoinRefused.user_connections()

    async def disconnect(self, org_id: str, user_id: str, connection_id: str) -> None:
        self.registry.count_connection(org_id, user_id, -1)
        try:
            await self._release_connection(org_id, user_id, connection_id)
        except BrokerUnavailable:
            self._unfinished_disconnects.append((org_id, user_id, connection_id))  # the heartbeat retries

    async def _release_connection(self, org_id: str, user_id: str, connection_id: str) -> None:
        user = redis_scripts.user_connections(org_id, user_id)
        await self._do(lambda: self.redis.hdel(user, connection_id))

    def _cached_roster(self, key: SessionKey) -> tuple[list[dict[str, Any]], int] | None:
        """A big session's truncated roster as this node last read it (for a second at most),
        and the presence version it showed."""
        cached = self._rosters.get(key)
        if cached is None or cached[0] < self._clock():
            self._rosters.pop(key, None)
            return None
        return cached[1], cached[2]

    async def leave(self, member: Membership) -> None:
        if member not in self._active:
            return
        self._active.discard(member)
        self._detach(member)
        try:
            await self._presence_leave(member)
        except BrokerUnavailable:
            self._unfinished_leaves.append(member)  # retried by the heartbeat once Redis is back

    async def publish(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        seq = int(await self._call("PUBLISH", *self._publish_script(key, user_id, name, data_json, None)))
        if seq < 0:
            raise SessionLimit()
        return seq

    async def publish_once(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> Published:
        keys, args = self._publish_script(key, user_id, name, data_json, message_id)
        if not self.window_ms:  # duplicates are not detected: the id only goes into the frame
            seq = int(await self._call("PUBLISH", keys, args))
            duplicate = False
        else:
            id_key = redis_scripts.message_id(key, user_id, message_id)
            answer = await self._call("PUBLISH", [*keys, *_encoded([id_key])], [*args, self.window_ms])
            seq, duplicate = int(answer[0]), bool(answer[1])
        if seq < 0:
            raise SessionLimit()
        return Published(seq, duplicate)

    def _publish_script(
        self, key: SessionKey, user_id: str, name: str | None, data_json: str, message_id: str | None
    ) -> tuple[list[bytes | int], list[bytes | int]]:
        """The PUBLISH script's keys and args for one message (without the message-id key)."""
        keys = SessionKeys.of(key)
        before, after = messages.message_frame_parts(
            session_id=key.session_id,
            user_id=user_id,
            name=name,
            ts=self._clock(),
            data_json=data_json,
            message_id=message_id,
        )
        # A session with members here exists: its members' messages never meet the cap.
        cap = 0 if key in self.registry.sessions else self.registry.max_sessions_per_org
        return (
            _encoded([keys.epoch, keys.seq, keys.history, keys.channel, redis_scripts.org_sessions(key.org_id)]),
            _encoded([new_epoch(), self.history_size, self.ttl, before, after, key.session_id, cap]),
        )

    async def set_state(self, member: Membership, state: Any, state_json: str) -> None:
        keys = SessionKeys.of(member.key)
        before, after = redis_presence.stated_entry_parts(self.node_id, member.user_id, member.name, state_json)
        frame = messages.presence_state_frame(
            session_id=member.key.session_id, user_id=member.user_id, state_json=state_json
        )
        await self._call(
            "STATE",
            [keys.presence, keys.channel, keys.presence_version],
            _encoded([member.connection_id, before, after, frame.text, self.ttl]),
        )

    async def signal(self, member: Membership, frame: OutFrame, key: str | None) -> None:
        # Pub/sub only: a signal is at most once, stored nowhere. The header names the sender
        # (never echoed to it) and the slot a newer signal replaces.
        header = json.dumps([member.connection_id, key])
        channel = SessionKeys.of(member.key).channel
        await self._do(lambda: self.redis.publish(channel, f"g{header}\n{frame.text}"))

    async def presence(self, key: SessionKey) -> dict[str, Any]:
        entries = await self._do(lambda: self.redis.hvals(SessionKeys.of(key).presence))
        participants, count = redis_presence.roster(entries)
        return {"participants": participants, "participant_count": count}

    async def kick(self, key: SessionKey, user_id: str, code: int, reason: str, *, ban_seconds: int = 0) -> int:
        keys = SessionKeys.of(key)
        order = "k" + json.dumps({"u": user_id, "c": code, "r": reason})
        if ban_seconds > 0:  # before the kick order: a kicked socket that reconnects at once is refused
            ban = redis_scripts.ban(key, user_id)
            await self._do(lambda: self.redis.set(ban, b"1", ex=ban_seconds))
        entries = await self._do(lambda: self.redis.hvals(keys.presence))
        await self._do(lambda: self.redis.publish(keys.channel, order))
        return sum(1 for raw in entries if (entry := redis_presence.entry(raw)) is not None and entry["u"] == user_id)

    # -- presence --------------------------------------------------------------------

    async def _presence_leave(self, member: Membership) -> None:
        keys = SessionKeys.of(member.key)
        before, after = messages.presence_frame_parts(
            "user_left", session_id=member.key.session_id, user_id=member.user_id, name=member.name
        )
        user = redis_scripts.user_connections(member.key.org_id, member.user_id)
        release = "1" if member.counts_connection else "0"
        state_before, state_after = messages.presence_state_frame_parts(
            session_id=member.key.session_id, user_id=member.user_id
        )
        await self._call(
            "LEAVE",
            [keys.presence, keys.channel, user, keys.users, keys.presence_version],
            _encoded(
                [member.connection_id, member.user_id, before, after, release, state_before, state_after, self.ttl]
            ),
        )

    async def _announce_reaped(self, key: SessionKey, user_id: str, name: str | None, count: int, version: int) -> None:
        """``user_left`` for a user whose connections were all on a dead node (the REAP script's)."""
        frame = messages.presence_frame("user_left", session_id=key.session_id, user_id=user_id, name=name, count=count)
        try:
            await self._do(lambda: self.redis.publish(SessionKeys.of(key).channel, f"p{version} - {frame.text}"))
        except BrokerUnavailable:
            log.warning("could not announce user_left session=%s user=%s", key.session_id, user_id)

    # -- subscriptions -----------------------------------------------------------------

    async def _subscribe(self, key: SessionKey) -> None:
        channel = SessionKeys.of(key).channel.encode()
        event = self._confirmed.get(channel)
        if event is None:
            event = self._confirmed[channel] = asyncio.Event()
            self._channels[channel] = key
            if self._pubsub is None:
                raise BrokerUnavailable("redis pub/sub is reconnecting")
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError) as exc:
                raise BrokerUnavailable(str(exc)) from None
        try:
            await asyncio.wait_for(event.wait(), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            raise BrokerUnavailable("redis did not confirm the subscription") from None

    def _detach(self, member: Membership) -> None:
        waiting = self._waiting.get(member.key)
        if waiting is not None:
            waiting[:] = [entry for entry in waiting if entry[0] is not member]
            if not waiting:
                del self._waiting[member.key]
        if self.registry.detach(member):
            # Nobody left here: stop receiving the session (a later join subscribes again).
            channel = SessionKeys.of(member.key).channel.encode()
            self._channels.pop(channel, None)
            self._confirmed.pop(channel, None)
            self._epochs.pop(member.key, None)
            self._seen.pop(member.key, None)
            self._rosters.pop(member.key, None)
            if self._pubsub is not None:
                self._spawn(self._quietly(self._pubsub.unsubscribe(channel)))
            self._spawn(
                self._quietly(self.redis.srem(redis_scripts.node_sessions(self.node_id), json.dumps(list(member.key))))
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(step: Awaitable[Any]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await step

    async def _listen(self) -> None:
        """Receive every subscribed channel on one connection; reconnect with backoff."""
        attempt = 0
        while not self._closing:
            pubsub = self._pubsub_client.pubsub()
            try:
                await pubsub.subscribe(redis_scripts.node_control(self.node_id), *self._channels)
                self._pubsub = pubsub
                resubscribed = set(self._channels)
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        channel = message["channel"]
                        if channel in self._confirmed:
                            self._confirmed[channel].set()
                        if channel == redis_scripts.node_control(self.node_id).encode():
                            attempt = 0
                            if not self._ever_connected:
                                self._ever_connected = True
                                if self._start_failed:
                                    log.info("redis reachable at %s", _safe_url(self._pubsub_url))
                            self.connected.set()
                            if resubscribed:
                                self._hold_for_resync(resubscribed)
                                resubscribed = set()
                    elif message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("redis pub/sub lost (%s); reconnecting", exc.__class__.__name__)
                elif not self._ever_connected and not self._start_failed:
                    # One line at start, not one per retry: the operator learns it at once.
                    self._start_failed = True
                    log.warning(
                        "redis unreachable at %s (%s: %s); retrying, /readyz answers 503 until it answers",
                        _safe_url(self._pubsub_url),
                        exc.__class__.__name__,
                        str(exc)[:200],
                    )
                self.connected.clear()
                self._pubsub = None
                for event in self._confirmed.values():
                    event.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))

    # -- heartbeat, keep-alive and reaping ---------------------------------------------------

    async def _heartbeat(self) -> None:
        while not self._closing:
            try:
                await self._beat()
            except (RedisError, OSError, BrokerUnavailable) as exc:
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT)

    async def _beat(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(redis_scripts.node_alive(self.node_id), b"1", px=int(PRESENCE_TTL * 1000))
        pipe.sadd(redis_scripts.NODES, self.node_id)
        live = list(self._epochs)
        for key in live:
            keys = SessionKeys.of(key)
            # A session with members never loses its epoch/counter, however quiet it is.
            pipe.expire(keys.epoch, self.ttl)
            pipe.expire(keys.seq, self.ttl)
            pipe.expire(keys.presence_version, self.ttl)  # a restarted version would hide changes
        await pipe.execute()
        if live:  # ... nor its place in --max-sessions-per-org (not in the pipeline: redis-py's
            # pipelines hold a connection forever when loading a script fails)
            org_keys = [redis_scripts.org_sessions(key.org_id) for key in live]
            await self._call("KEEP", _encoded([*org_keys]), _encoded([self.ttl, *(key.session_id for key in live)]))
        if self._held and self.connected.is_set():
            await self._resync(list(self._held))
        pending, self._unfinished_leaves = self._unfinished_leaves, []
        for member in pending:
            try:
                await self._presence_leave(member)
            except BrokerUnavailable:
                self._unfinished_leaves.append(member)
        released, self._unfinished_disconnects = self._unfinished_disconnects, []
        for index, connection in enumerate(released):
            try:
                await self._release_connection(*connection)
            except BrokerUnavailable:
                self._unfinished_disconnects.extend(released[index:])
                break
        for raw in await self.redis.smembers(redis_scripts.NODES):
            node = _text(raw)
            if node != self.node_id and not await self.redis.exists(redis_scripts.node_alive(node)):
                await self._reap(node)

    async def _reap(self, node: str) -> None:
        """Remove a dead node's connections from presence and announce who left."""
        log.info("reaping presence of dead node %s", node)
        for raw in await self.redis.smembers(redis_scripts.node_sessions(node)):
            org_id, session_id = json.loads(raw)
            key = SessionKey(org_id, session_id)
            keys = SessionKeys.of(key)
            count, version, gone = await self._call(
                "REAP",
                [keys.presence, keys.users, keys.presence_version],
                [node, redis_scripts.user_prefix(org_id), self.ttl],
            )
            for entry_raw in gone:
                entry = redis_presence.entry(entry_raw)
                if entry is not None:
                    await self._announce_reaped(key, entry["u"], entry.get("m"), count, version)
        await self.redis.delete(redis_scripts.node_sessions(node))
        await self.redis.srem(redis_scripts.NODES, node)
