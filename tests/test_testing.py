"""tornado_ws.testing for unittest users: the AsyncHTTPTestCase mixin and make_token."""

from __future__ import annotations

from typing import Any

import jwt
from tornado.testing import AsyncHTTPTestCase, gen_test

import tornado_ws
from tornado_ws.testing import DEFAULT_SECRET, HubTestMixin, make_token


def test_make_token_carries_the_claims() -> None:
    claims = jwt.decode(make_token("k" * 64, "alice", "acme", ttl=60, roles=["admin"]), "k" * 64, algorithms=["HS256"])
    assert (claims["sub"], claims["org"], claims["roles"]) == ("alice", "acme", ["admin"])
    assert 55 <= claims["exp"] - claims["iat"] <= 60


class ChatTest(HubTestMixin, AsyncHTTPTestCase):
    """What an application developer writes with Tornado's own test runner."""

    def make_hub(self) -> tornado_ws.Hub:
        return tornado_ws.Hub(jwt_secret=self.jwt_secret, rate_limit=0, history_size=10)

    @gen_test
    async def test_two_users_chat(self) -> None:
        alice = await self.ws_connect("room", "alice")
        bob = await self.ws_connect("room", "bob")
        joined: dict[str, Any] = await alice.recv(timeout=5)
        assert joined["type"] == "user_joined" and joined["user_id"] == "bob"
        await bob.send({"text": "hi"})
        message = await alice.recv(timeout=5)
        assert (message["user_id"], message["data"]) == ("bob", {"text": "hi"})
        assert self.hub.presence("acme", "room")["participant_count"] == 2
        assert self.jwt_secret == DEFAULT_SECRET
