"""MemoryBroker: one process keeps every session's order, history and presence (the default)."""

from __future__ import annotations

from typing import Any

from tornado_ws.brokers.base import Broker, JoinRefused, Published, SessionLimit
from tornado_ws.core.registry import Membership, SessionKey
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import Recovery


class MemoryBroker(Broker):
    """Everything in this process: the registry's own streams and presence."""

    async def join(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        return self.join_now(member, epoch=epoch, since=since)

    def join_now(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        registry, key = self.registry, member.key
        # No await between these checks and the join: nothing can slip in between.
        if registry.banned(key, member.user_id):
            raise JoinRefused.banned()
        if member.counts_connection:
            self._admit(key.org_id, member.user_id)
        if not registry.has_room(key):
            raise SessionLimit()
        return registry.join(member, epoch=epoch, since=since)

    def _admit(self, org_id: str, user_id: str) -> None:
        registry = self.registry
        if registry.org_full(org_id):
            raise JoinRefused.org_connections()
        if registry.user_connections(org_id, user_id) >= registry.max_connections_per_user:
            raise JoinRefused.user_connections()

    async def connect(self, org_id: str, user_id: str, connection_id: str) -> None:
        self._admit(org_id, user_id)
        self.registry.count_connection(org_id, user_id, +1)

    async def disconnect(self, org_id: str, user_id: str, connection_id: str) -> None:
        self.registry.count_connection(org_id, user_id, -1)

    async def set_state(self, member: Membership, state: Any, state_json: str) -> None:
        self.set_state_now(member, state, state_json)

    async def signal(self, member: Membership, frame: OutFrame, key: str | None) -> None:
        self.signal_now(member, frame, key)

    def set_state_now(self, member: Membership, state: Any, state_json: str) -> bool:
        self.registry.set_state(member, state, state_json)
        return True

    def signal_now(self, member: Membership, frame: OutFrame, key: str | None) -> bool:
        self.registry.signal(member.key, frame, sender=member.connection_id, slot_key=key)
        return True

    async def leave(self, member: Membership) -> None:
        self.leave_now(member)

    def leave_now(self, member: Membership) -> bool:
        self.registry.leave(member)
        return True

    async def publish(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        return self.publish_now(key, user_id=user_id, name=name, data_json=data_json)

    def publish_now(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        if not self.registry.has_room(key):
            raise SessionLimit()
        return self.registry.publish(key, user_id=user_id, name=name, data_json=data_json)

    async def publish_once(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> Published:
        return self.publish_once_now(key, user_id=user_id, name=name, data_json=data_json, message_id=message_id)

    def publish_once_now(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> Published:
        registry = self.registry
        # A repeat is answered even where a new session would be refused: it is no new stream.
        seq = registry.published_seq(key, user_id, message_id)
        if seq is not None:
            return Published(seq, True)
        if not registry.has_room(key):
            raise SessionLimit()
        seq, duplicate = registry.publish_once(
            key, user_id=user_id, name=name, data_json=data_json, message_id=message_id
        )
        return Published(seq, duplicate)

    async def presence(self, key: SessionKey) -> dict[str, Any]:
        return self.registry.presence(key)

    async def kick(self, key: SessionKey, user_id: str, code: int, reason: str, *, ban_seconds: int = 0) -> int:
        self.registry.ban(key, user_id, ban_seconds)
        return self.registry.kick(key, user_id, code, reason)
