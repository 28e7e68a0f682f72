"""The canary of the attack catalogue (docs/security.md): proof the server still serves others.

Two members of session ``acme``/``canary`` exchange messages in the background while an attack
runs and once more after it. Used by tests/security/ and by every other test written in that
pattern (caps, bans, the client against hostile servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from tests.conftest import TIMEOUT, Client, Clients, make_token


class Canary:
    """Two members of session ``canary`` exchanging messages: proof the server still serves others.

    Each round, one member publishes ``{"canary": n}`` and *both* must receive exactly that
    frame next, with the next seq: nothing else ever arrives in the canary session, so any
    stray frame (a leak from the attack) fails the round too.
    """

    SESSION = "canary"
    PAUSE = 0.05  # between background rounds: ~10 rounds/s, far under any rate limit used here

    def __init__(self, a: Client, b: Client) -> None:
        self.a, self.b = a, b
        self.rounds = 0
        self.seq = 0
        self.worst = 0.0

    @classmethod
    async def open(cls, clients: Clients, org: str = "acme", token: Callable[[str, str], str] | None = None) -> Canary:
        mint = token or (lambda sub, org_id: make_token(sub, org_id))
        members = []
        for sub in ("canary-a", "canary-b"):
            client = await clients.connect(cls.SESSION, mint(sub, org))
            welcome = await client.recv()
            assert welcome["type"] == "welcome", welcome
            members.append(client)
        joined = await members[0].recv()
        assert joined["type"] == "user_joined", joined
        canary = cls(*members)
        await canary.exchange()
        return canary

    async def exchange(self, timeout: float = TIMEOUT) -> None:
        n = self.rounds
        sender = self.a if n % 2 == 0 else self.b
        started = time.monotonic()
        await sender.publish({"canary": n})
        for member in (self.a, self.b):
            frame = await member.recv(timeout)
            assert frame["type"] == "message", f"canary got {frame}"
            assert (frame["session_id"], frame["seq"], frame["data"]) == (self.SESSION, self.seq + 1, {"canary": n})
        self.seq += 1
        self.rounds += 1
        self.worst = max(self.worst, time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def throughout(self, min_rounds: int = 0) -> AsyncIterator[Canary]:
        """Exchange in the background while the body runs; then check it never failed and works now."""
        stop = asyncio.Event()
        before = self.rounds

        async def loop() -> None:
            # At least one round even when the attack is over before this task first runs.
            while True:
                await self.exchange()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.PAUSE)
                if stop.is_set():
                    return

        task = asyncio.ensure_future(loop())
        try:
            yield self
        finally:
            stop.set()
            await task  # re-raises a failed round
        during = self.rounds - before
        assert during >= min_rounds, f"canary made {during} round(s) during the attack, wanted {min_rounds}"
        await self.exchange()


async def intruder_is_refused(clients: Clients, token: str, session: str = "standup") -> tuple[int | None, str]:
    """Connect with ``token`` and wait for the server's close: (code, reason)."""
    intruder = await clients.connect(session, token)
    return await intruder.closed_with()


async def attacker_and_witness(clients: Clients, session: str = "standup") -> tuple[Client, Client]:
    """mallory (the attacker) and bob (a bystander) in ``session``, past their joins' presence frames."""
    mallory, _ = await clients.join(session, "mallory")
    bob, _ = await clients.join(session, "bob")
    await mallory.recv_type("user_joined")
    return mallory, bob
