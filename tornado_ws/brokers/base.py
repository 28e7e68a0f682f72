"""The broker seam: where a session's order, history and presence live.

:class:`MemoryBroker` keeps them in this process (the default, embedded
mode); :class:`~tornado_ws.brokers.redis.RedisBroker` keeps them in Redis so
several processes serve one session. Handlers talk only to :class:`Broker`;
both implementations pass ``tests/brokers/test_broker_contract.py``.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

from tornado_ws.core.registry import Membership, Registry, SessionKey
from tornado_ws.core.server_messages import OutFrame
from tornado_ws.core.stream import Recovery
from tornado_ws.errors import CloseCode

#: The longest ban a kick may impose (30 days).
MAX_BAN_SECONDS = 30 * 24 * 3600


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the operation did not happen."""


class JoinRefused(Exception):
    """A cap or a ban refused the join; nothing changed. The handler closes with ``code``/``reason``."""

    def __init__(self, code: int, reason: str, label: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        #: The ``reason`` label of the refused-handshakes metric.
        self.label = label

    @classmethod
    def banned(cls) -> JoinRefused:
        return cls(CloseCode.KICKED, "banned", "banned")

    @classmethod
    def org_connections(cls) -> JoinRefused:
        return cls(CloseCode.TRY_AGAIN_LATER, "too many connections for this organization", "per_org_limit")

    @classmethod
    def user_connections(cls) -> JoinRefused:
        return cls(CloseCode.TRY_AGAIN_LATER, "too many connections for this user", "per_user_limit")


class SessionLimit(JoinRefused):
    """The key would be a new session and its org is at ``--max-sessions-per-org``.

    Raised by :meth:`Broker.join` and by :meth:`Broker.publish`: a publish to a new
    session starts a stream too. Members publishing in their own session never see it.
    """

    def __init__(self) -> None:
        super().__init__(CloseCode.TRY_AGAIN_LATER, "too many sessions in this organization", "org_session_limit")


class Published(NamedTuple):
    """What :meth:`Broker.publish_once` did: the message's seq, and whether it was a repeat
    (then ``seq`` is the original's and nothing was sent)."""

    seq: int
    duplicate: bool = False


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

    def publish_once_now(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> Published | None:
        """:meth:`publish_once` synchronously when this broker can; None means "use it"."""
        return None

    def set_state_now(self, member: Membership, state: Any, state_json: str) -> bool:
        """Set ``member``'s presence state synchronously when this broker can; False means "use
        :meth:`set_state`"."""
        return False

    @abc.abstractmethod
    async def set_state(self, member: Membership, state: Any, state_json: str) -> None:
        """Set ``member``'s presence state (a JSON object, and its text): every member of the
        session, on every node, gets ``presence_state`` with its user's state (coalesced)."""

    def signal_now(self, member: Membership, frame: OutFrame, key: str | None) -> bool:
        """Relay a ``signal`` synchronously when this broker can; False means "use :meth:`signal`"."""
        return False

    @abc.abstractmethod
    async def signal(self, member: Membership, frame: OutFrame, key: str | None) -> None:
        """Relay a ``signal`` to every other connection of ``member``'s session, on every node:
        never stored, never sequenced, at most once."""

    def join_now(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery | None:
        """:meth:`join` synchronously when this broker can (no I/O); None means "use :meth:`join`"."""
        return None

    def leave_now(self, member: Membership) -> bool:
        """Leave synchronously when this broker can (no I/O); False means "use :meth:`leave`"."""
        return False

    @abc.abstractmethod
    async def join(self, member: Membership, *, epoch: str | None = None, since: int | None = None) -> Recovery:
        """Add ``member``: it gets ``welcome`` (+ missed frames when resuming), then live frames;
        the session's other members get ``user_joined`` if this is the user's first connection.

        Admission is part of the join, atomically: :class:`JoinRefused` when the user is
        banned from the session, the org is at ``max_connections_per_org`` in this process,
        the user at ``max_connections_per_user`` or (:class:`SessionLimit`) the org at
        ``max_sessions_per_org``; the last two count every node. A membership with
        ``counts_connection=False`` (``/ws``) skips the two connection caps: its connection
        was counted by :meth:`connect`."""

    @abc.abstractmethod
    async def connect(self, org_id: str, user_id: str, connection_id: str) -> None:
        """Count a ``/ws`` connection (in no session yet) against the caps: :class:`JoinRefused`
        when the org is at ``max_connections_per_org`` in this process or the user at
        ``max_connections_per_user`` (every node). Its memberships (``counts_connection=False``)
        are then admitted without counting it again."""

    @abc.abstractmethod
    async def disconnect(self, org_id: str, user_id: str, connection_id: str) -> None:
        """Release what a successful :meth:`connect` counted (once per connection; never raises)."""

    @abc.abstractmethod
    async def leave(self, member: Membership) -> None:
        """Remove ``member`` (idempotent); ``user_left`` if it was the user's last connection."""

    @abc.abstractmethod
    async def publish(self, key: SessionKey, *, user_id: str, name: str | None, data_json: str) -> int:
        """Sequence a message and deliver it to every member of the session; returns its seq.

        :class:`SessionLimit` when ``key`` would be a new session over the org's cap."""

    @abc.abstractmethod
    async def publish_once(
        self, key: SessionKey, *, user_id: str, name: str | None, data_json: str, message_id: str
    ) -> Published:
        """:meth:`publish` with the frame carrying ``"id": message_id``, unless ``user_id`` already
        published ``message_id`` in ``key`` within the idempotency window: then nothing is sent
        and the answer is the original seq with ``duplicate=True``. Decided atomically with the
        sequencing, so two nodes receiving the same id at once publish it once."""

    @abc.abstractmethod
    async def presence(self, key: SessionKey) -> dict[str, Any]:
        """``{"participants": [...], "participant_count": N}`` across all nodes."""

    @abc.abstractmethod
    async def kick(self, key: SessionKey, user_id: str, code: int, reason: str, *, ban_seconds: int = 0) -> int:
        """Close every connection of ``user_id`` in ``key`` on every node; returns how many.

        With ``ban_seconds`` the user's joins of ``key`` are refused (4003 ``banned``) on every
        node for that long; the ban is in place before the first socket closes."""
