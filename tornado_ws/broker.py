"""The broker seam: where a session's order, history and presence live.

:class:`MemoryBroker` keeps them in this process (the default, embedded
mode); :class:`~tornado_ws.redis_broker.RedisBroker` keeps them in Redis so
several processes serve one session. Handlers talk only to :class:`Broker`;
both implementations pass ``tests/test_broker_contract.py``.
"""

from __future__ import annotations

import abc
from typing import Any

from .history import Recovery
from .hub import Member, Registry, SessionKey


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the operation did not happen."""


class Broker(abc.ABC):
    """Sequencing, history, presence and fan-out for the sessions of one node."""

    def __init__(self, registry: Registry) -> None:
        #: This node's connections; the broker fans frames out through it.
        self.registry = registry

    async def start(self) -> None:  # noqa: B027 - a broker with nothing to connect keeps the default
        """Connect (idempotent)."""

    async def close(self) -> None:  # noqa: B027
        """Disconnect and stop background work."""

    async def healthy(self) -> bool:
        """Whether the broker answers right now (``/readyz``)."""
        return True

    def publish_now(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int | None:
        """Publish synchronously when this broker can (no I/O); None means "use :meth:`publish`".

        Handlers try it first: a coroutine and a Task per inbound message cost more than
        a small room's whole fan-out.
        """
        return None

    def leave_now(self, member: Member) -> bool:
        """Leave synchronously when this broker can (no I/O); False means "use :meth:`leave`"."""
        return False

    def has_room(self, key: SessionKey) -> bool:
        """False when ``key`` would be a new session over the org's session cap (per node)."""
        return self.registry.has_room(key)

    @abc.abstractmethod
    async def join(self, member: Member, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        """Add ``member``: it gets ``welcome`` (+ missed frames when resuming), then live frames;
        the session's other members get ``user_joined`` if this is the user's first connection."""

    @abc.abstractmethod
    async def leave(self, member: Member) -> None:
        """Remove ``member`` (idempotent); ``user_left`` if it was the user's last connection."""

    @abc.abstractmethod
    async def publish(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        """Sequence a message and deliver it to every member of the session; returns its seq."""

    @abc.abstractmethod
    async def presence(self, key: SessionKey) -> dict[str, Any]:
        """``{"participants": [...], "participant_count": N}`` across all nodes."""

    @abc.abstractmethod
    async def kick(self, key: SessionKey, user_id: str, code: int, reason: str) -> int:
        """Close every connection of ``user_id`` in ``key`` on every node; returns how many."""


class MemoryBroker(Broker):
    """Everything in this process: the registry's own streams and presence."""

    async def join(self, member: Member, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        return self.registry.join(member, epoch=epoch, since=since)

    async def leave(self, member: Member) -> None:
        self.leave_now(member)

    def leave_now(self, member: Member) -> bool:
        self.registry.leave(member)
        return True

    async def publish(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        return self.registry.publish(key, user_id=user_id, name=name, data_json=data_json)

    def publish_now(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int | None:
        return self.registry.publish(key, user_id=user_id, name=name, data_json=data_json)

    async def presence(self, key: SessionKey) -> dict[str, Any]:
        return self.registry.presence(key)

    async def kick(self, key: SessionKey, user_id: str, code: int, reason: str) -> int:
        return self.registry.kick(key, user_id, code, reason)
