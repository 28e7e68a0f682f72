"""Resume over the wire: `since`/`epoch` on the URL, with a raw `websockets` client."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Clients, test_config
from tornado_ws.config import Config


@pytest.fixture
def config() -> Config:
    return test_config(history_size=1000)


async def test_resume_while_messages_are_being_published_has_no_gap_or_duplicate(clients: Clients) -> None:
    total = 400
    first, welcome = await clients.join("room", "alice")
    pub, _ = await clients.join("room", "pub")
    await first.recv_type("user_joined")

    async def flood() -> None:
        for n in range(total):
            await pub.publish(n)
            if n % 10 == 0:
                await asyncio.sleep(0)  # let the resume interleave with publishing

    for n in range(10):
        await pub.publish(n)
    seen = [(await first.recv_type("message"))["seq"] for _ in range(10)]
    await first.close()
    flooding = asyncio.ensure_future(flood())
    await asyncio.sleep(0.005)  # resume lands mid-flood (correctness does not depend on where)
    back, rewelcome = await clients.join("room", "alice", query={"since": seen[-1], "epoch": welcome["epoch"]})
    assert rewelcome["recovered"] is True
    assert rewelcome["epoch"] == welcome["epoch"]
    while seen[-1] < total + 10:
        seen.append((await back.recv_type("message"))["seq"])
    await flooding
    assert seen == list(range(1, total + 11))


async def test_resume_needs_the_same_epoch(clients: Clients) -> None:
    alice, welcome = await clients.join("room")
    await alice.publish("x")
    await alice.recv_type("message")
    _, wrong = await clients.join("room", "bob", query={"since": 0, "epoch": "not-" + welcome["epoch"]})
    assert wrong["recovered"] is False and wrong["seq"] == 1


@pytest.mark.parametrize("since", ["-1", "abc", "1e3", "9" * 30, "%C2%B2", "%EF%BC%90"])
async def test_malformed_since_is_an_honest_no(clients: Clients, since: str) -> None:
    # ``²`` (str.isdigit() is True, int() raises: once a 1011) and a fullwidth zero (int() reads 0).
    _, welcome = await clients.join("room")
    _, again = await clients.join("room", "bob", query={"since": since, "epoch": welcome["epoch"]})
    assert again["recovered"] is False


@pytest.mark.parametrize("zero", ["%D9%A0", "%EF%BC%90", "%E0%A5%A6"])
async def test_only_ascii_digits_are_a_resume_point(clients: Clients, zero: str) -> None:
    """Arabic-Indic, fullwidth and Devanagari zeros are not ``0``: no replay from them."""
    alice, welcome = await clients.join("room")
    for n in range(3):
        await alice.publish(n)
        await alice.recv_type("message")
    _, again = await clients.join("room", "bob", query={"since": zero, "epoch": welcome["epoch"]})
    assert (again["recovered"], again["seq"]) == (False, 3)
    _, ascii_zero = await clients.join("room", "carol", query={"since": 0, "epoch": welcome["epoch"]})
    assert ascii_zero["recovered"] is True


class TestHistoryTtl:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(history_ttl=0)

    async def test_lone_user_cannot_resume_once_history_expired(self, clients: Clients) -> None:
        alice, welcome = await clients.join("room")
        await alice.publish("x")
        await alice.recv_type("message")
        await alice.close()
        _, again = await clients.join("room", query={"since": 1, "epoch": welcome["epoch"]})
        assert again["recovered"] is False
        assert again["epoch"] != welcome["epoch"] and again["seq"] == 0
