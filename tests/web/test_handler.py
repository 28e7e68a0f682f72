"""The WebSocket endpoint, black-box: a real server on a free port, real `websockets` clients."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import SECRET, Clients, make_token, test_config, wait_for
from tests.rawws import expect_answers_behind_the_101, raw_upgrade, upgrade_request, upgrade_with_frames_behind
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry, SessionKey

# -- the old system's six tests ------------------------------------------------------------


async def test_valid_token_gets_welcome_with_user_and_session(clients: Clients) -> None:
    client = await clients.connect("room-1", make_token("alice", "acme", name="Alice"))
    welcome = await client.recv()
    assert welcome["type"] == "welcome"
    assert welcome["session_id"] == "room-1"
    assert welcome["user_id"] == "alice"
    assert welcome["org_id"] == "acme"
    assert welcome["participants"] == [{"user_id": "alice", "name": "Alice"}]
    assert welcome["participant_count"] == 1
    assert welcome["seq"] == 0
    assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]
    assert welcome["recovered"] is False
    assert isinstance(welcome["epoch"], str) and welcome["epoch"]


async def test_invalid_token_is_closed_1008(clients: Clients) -> None:
    client = await clients.connect("room", "not-a-jwt")
    code, reason = await client.closed_with()
    assert code == 1008
    assert "not-a-jwt" not in reason


async def test_missing_token_is_closed_1008(clients: Clients) -> None:
    client = await clients.connect("room")
    assert (await client.closed_with())[0] == 1008


async def test_broadcast_reaches_all_with_join_notifications_and_count(clients: Clients) -> None:
    alice, _ = await clients.join("room", "alice")
    bob, welcome_b = await clients.join("room", "bob", name="Bob")
    assert welcome_b["participant_count"] == 2
    assert {p["user_id"] for p in welcome_b["participants"]} == {"alice", "bob"}
    joined = await alice.recv()
    assert joined == {
        "type": "user_joined",
        "session_id": "room",
        "user_id": "bob",
        "name": "Bob",
        "participant_count": 2,
    }
    await alice.publish({"text": "hello"})
    for client in (alice, bob):
        frame = await client.recv()
        assert frame["type"] == "message"
        assert frame["user_id"] == "alice"
        assert frame["data"] == {"text": "hello"}
        assert frame["seq"] == 1
        assert frame["session_id"] == "room"
        assert isinstance(frame["ts"], float)


async def test_sessions_are_isolated(clients: Clients) -> None:
    a1, _ = await clients.join("room-a", "alice")
    b1, _ = await clients.join("room-b", "bob")
    await a1.publish("only for room-a")
    assert (await a1.recv())["data"] == "only for room-a"
    await b1.assert_silent()


async def test_disconnect_notifies_updates_count_and_cleans_up(clients: Clients, registry: Registry) -> None:
    alice, _ = await clients.join("room", "alice")
    bob, _ = await clients.join("room", "bob")
    await alice.recv_type("user_joined")
    await bob.close()
    left = await alice.recv()
    assert left == {"type": "user_left", "session_id": "room", "user_id": "bob", "participant_count": 1}
    await alice.close()
    await wait_for(lambda: not registry.sessions)  # a poll: alice was the last, no user_left to await
    assert registry.connection_count == 0


# -- authentication -------------------------------------------------------------------------


def _rsa_token(**claims: Any) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode({"sub": "alice", "org": "acme", "exp": 4102444800, **claims}, key, algorithm="RS256")


def _none_token() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b'{"sub":"alice","org":"acme","exp":4102444800}').rstrip(b"=").decode()
    return f"{header}.{body}."


REFUSED_TOKENS = {
    "malformed": lambda: "abc.def.ghi",
    "expired": lambda: make_token(ttl=-10),
    "not_yet_valid": lambda: make_token(nbf=4102444800),
    "wrong_key": lambda: make_token(secret="another-secret-another-secret-123"),
    "wrong_algorithm": lambda: make_token(algorithm="HS512"),
    "alg_none": _none_token,
    "rs256_when_hs256_pinned": _rsa_token,
    "no_sub": lambda: make_token(sub=None),
    "no_org": lambda: make_token(org=None),
    "empty_org": lambda: make_token(org=""),
    "non_string_sub": lambda: jwt.encode({"sub": 42, "org": "acme", "exp": 4102444800}, SECRET, algorithm="HS256"),
    "bad_roles": lambda: make_token(roles="admin"),
    "no_exp": lambda: jwt.encode({"sub": "alice", "org": "acme"}, SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED_TOKENS))
async def test_refused_tokens_close_1008_and_broadcast_nothing(clients: Clients, kind: str) -> None:
    member, _ = await clients.join("room", "bob")
    token = REFUSED_TOKENS[kind]()
    intruder = await clients.connect("room", token)
    code, reason = await intruder.closed_with()
    assert code == 1008
    assert reason and token not in reason
    await member.assert_silent()


async def test_bearer_header_authenticates(clients: Clients) -> None:
    client = await clients.connect("room", headers={"Authorization": f"Bearer {make_token('svc', 'acme')}"})
    welcome = await client.recv()
    assert welcome["user_id"] == "svc"


async def test_bad_bearer_header_is_refused(clients: Clients) -> None:
    client = await clients.connect("room", headers={"Authorization": "Bearer nope"})
    assert (await client.closed_with())[0] == 1008


class TestAudienceAndIssuer:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(jwt_audience="hub", jwt_issuer="https://auth.example")

    async def test_matching_audience_and_issuer_accepted(self, clients: Clients) -> None:
        _, welcome = await clients.join("room", aud="hub", iss="https://auth.example")
        assert welcome["user_id"] == "alice"

    @pytest.mark.parametrize(
        "claims", [{"aud": "other", "iss": "https://auth.example"}, {"aud": "hub", "iss": "https://evil"}, {}]
    )
    async def test_wrong_or_missing_audience_or_issuer_refused(self, clients: Clients, claims: dict[str, str]) -> None:
        client = await clients.connect("room", make_token(**claims))
        assert (await client.closed_with())[0] == 1008


@pytest.mark.parametrize(
    "session_id",
    ["a%20b", "..%2F..%2Fetc", "room%00", "x" * 129, "caf%C3%A9", "%D0%B0dmin", "a%2Fb", "a/b", "%FF", ""],
)
async def test_bad_session_ids_close_1008(clients: Clients, session_id: str) -> None:
    client = await clients.connect(session_id, make_token())
    assert (await client.closed_with())[0] == 1008


async def test_longest_and_all_allowed_characters_are_accepted(clients: Clients) -> None:
    for session_id in ["x" * 128, "Az09._~:-"]:
        _, welcome = await clients.join(session_id)
        assert welcome["session_id"] == session_id


# -- isolation and presence -------------------------------------------------------------------


async def test_same_session_id_in_two_orgs_is_two_sessions(clients: Clients) -> None:
    alice, _ = await clients.join("standup", "alice", "acme")
    eve, welcome_eve = await clients.join("standup", "eve", "globex")
    assert welcome_eve["participant_count"] == 1
    assert welcome_eve["participants"] == [{"user_id": "eve"}]
    await alice.publish("acme secret")
    assert (await alice.recv())["data"] == "acme secret"
    await eve.assert_silent()
    await eve.publish("globex secret")
    assert (await eve.recv())["seq"] == 1  # its own counter, not acme's
    await alice.assert_silent()


async def test_two_tabs_are_one_participant(clients: Clients) -> None:
    bob, _ = await clients.join("room", "bob")
    tab1, _ = await clients.join("room", "alice")
    assert (await bob.recv())["type"] == "user_joined"
    tab2, welcome2 = await clients.join("room", "alice")
    assert welcome2["participant_count"] == 2
    await bob.assert_silent()  # no second user_joined for alice
    await tab1.close()
    await bob.assert_silent()  # alice is still here through tab2
    await tab2.publish("still here")
    assert (await bob.recv())["data"] == "still here"
    await tab2.close()
    assert (await bob.recv()) == {"type": "user_left", "session_id": "room", "user_id": "alice", "participant_count": 1}


async def test_sender_cannot_spoof_user_id(clients: Clients) -> None:
    alice, _ = await clients.join("room", "alice")
    bob, _ = await clients.join("room", "bob")
    await alice.recv_type("user_joined")
    await alice.send({"type": "message", "user_id": "bob", "name": "Bob", "data": {"user_id": "bob"}})
    frame = await bob.recv()
    assert frame["user_id"] == "alice"
    assert "name" not in frame
    assert frame["data"] == {"user_id": "bob"}


async def test_total_order_under_three_concurrent_senders(clients: Clients) -> None:
    per_sender = 60
    senders = [(await clients.join("room", f"sender{i}"))[0] for i in range(3)]
    receivers = [(await clients.join("room", f"reader{i}"))[0] for i in range(3)]
    everyone = senders + receivers

    async def send_all(index: int, client: Any) -> None:
        for n in range(per_sender):
            await client.publish({"from": index, "n": n})

    async def collect(client: Any) -> list[tuple[int, int, int]]:
        seen = []
        while len(seen) < 3 * per_sender:
            frame = await client.recv_type("message")
            seen.append((frame["seq"], frame["data"]["from"], frame["data"]["n"]))
        return seen

    collectors = [asyncio.ensure_future(collect(c)) for c in everyone]
    await asyncio.gather(*(send_all(i, c) for i, c in enumerate(senders)))
    streams = await asyncio.gather(*collectors)
    first = streams[0]
    assert [seq for seq, _, _ in first] == list(range(1, 3 * per_sender + 1))
    for stream in streams[1:]:
        assert stream == first
    for sender in range(3):
        assert [n for _, s, n in first if s == sender] == list(range(per_sender))


# -- bad frames ---------------------------------------------------------------------------------

BAD_FRAMES = [
    ("not json", "bad_json"),
    ('{"type": "message", "data": NaN}', "bad_json"),
    ('{"type": "message", "data": Infinity}', "bad_json"),
    ('{"type": "message", "data": ' + "9" * 5000 + "}", "bad_json"),
    ('{"type": "message", "data": ' + "[" * 20000 + "]" * 20000 + "}", "bad_json"),
    ('{"type": "message", "data": "\\ud800"}', "bad_json"),
    ('{"type": "message", "type": "ping", "data": 1}', "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('"message"', "bad_frame"),
    ("42", "bad_frame"),
    ("null", "bad_frame"),
    ('{"data": 1}', "bad_frame"),
    ('{"type": 7, "data": 1}', "bad_frame"),
    ('{"type": "message"}', "bad_frame"),
    ('{"type": "shout", "data": 1}', "unknown_type"),
    (b"\x00\x01binary", "binary_not_supported"),
]


@pytest.mark.parametrize(("raw", "code"), BAD_FRAMES, ids=[f"{c}-{i}" for i, (_, c) in enumerate(BAD_FRAMES)])
async def test_bad_frames_get_error_and_connection_lives(clients: Clients, raw: str | bytes, code: str) -> None:
    sender, _ = await clients.join("room", "alice")
    peer, _ = await clients.join("room", "bob")
    await sender.recv_type("user_joined")
    await sender.send(raw)
    error = await sender.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    await peer.assert_silent()
    await sender.publish("after the error")
    assert (await sender.recv())["seq"] == 1
    assert (await peer.recv())["data"] == "after the error"


async def test_valid_unusual_payloads_round_trip(clients: Clients) -> None:
    alice, _ = await clients.join("room")
    payloads: list[Any] = [None, 0, -1.5, "", "NUL\u0000byte", "😀 émoji", [], {}, {"nested": [[[1]]]}, 10**300]
    for data in payloads:
        await alice.publish(data)
        assert (await alice.recv())["data"] == data


async def test_ping_gets_pong(clients: Clients) -> None:
    alice, _ = await clients.join("room")
    await alice.send({"type": "ping"})
    assert await alice.recv() == {"type": "pong"}


class TestMessageSize:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_message_size=1024)

    async def test_frame_at_the_limit_is_delivered(self, clients: Clients) -> None:
        alice, _ = await clients.join("room")
        envelope = json.dumps({"type": "message", "data": ""})
        text = "x" * (1024 - len(envelope))
        await alice.publish(text)
        assert (await alice.recv())["data"] == text

    async def test_oversized_frame_closes_1009(self, clients: Clients, registry: Registry) -> None:
        alice, _ = await clients.join("room", "alice")
        bob, _ = await clients.join("room", "bob")
        await alice.recv_type("user_joined")
        await alice.publish("x" * 2000)
        assert (await alice.closed_with())[0] == 1009
        assert (await bob.recv())["type"] == "user_left"


# -- dead connections -----------------------------------------------------------------------------


async def test_reset_tcp_connection_leaves_at_once(clients: Clients, port: int) -> None:
    alice, _ = await clients.join("room", "alice")
    _, writer, _ = await raw_upgrade(port, "room", make_token("ghost"))
    assert (await alice.recv())["user_id"] == "ghost"
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()  # RST, no close frame
    left = await alice.recv()
    assert left["type"] == "user_left" and left["user_id"] == "ghost"


class TestSilentPeer:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0.2, ping_timeout=0.2)

    async def test_peer_that_stops_answering_pings_is_removed(
        self, clients: Clients, port: int, registry: Registry
    ) -> None:
        alice, _ = await clients.join("room", "alice")
        _, writer, _ = await raw_upgrade(port, "room", make_token("ghost"))
        assert (await alice.recv())["user_id"] == "ghost"
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            # The ghost never reads again: no pong. The sweeper pings it once it has been
            # quiet for an interval and drops it once the ping is older than the timeout.
            left = await alice.recv_type("user_left", timeout=10)
            assert left["user_id"] == "ghost"
            assert loop.time() - started < 0.2 + 0.2 + 1.0  # interval + timeout + slack, no 5 s close wait
            assert registry.presence(SessionKey("acme", "room"))["participant_count"] == 1
        finally:
            writer.close()

    async def test_a_peer_that_answers_pings_stays(self, clients: Clients) -> None:
        alice, _ = await clients.join("room", "alice")  # websockets answers pings by itself
        bob, _ = await clients.join("room", "bob")
        await asyncio.sleep(1.0)  # five ping intervals: time itself is what is tested
        await bob.publish("still here")
        assert (await alice.recv_type("message"))["data"] == "still here"


# -- the upgrade itself ---------------------------------------------------------------------------


async def test_an_unsupported_websocket_version_gets_426_naming_13(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(port, f"/ws/room?token={make_token('alice')}", version="8"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 426") and b"Sec-Websocket-Version: 13" in head
    finally:
        writer.close()


async def test_frames_sent_right_behind_the_upgrade_request_are_answered_after_the_welcome(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_with_frames_behind(port))
        await expect_answers_behind_the_101(reader)
    finally:
        writer.close()


async def test_a_failure_inside_open_closes_1011_and_logs(
    clients: Clients, app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(token: str | None) -> None:
        raise RuntimeError("verifier bug")

    monkeypatch.setattr(app.settings["state"].verifier, "verify", broken)
    client = await clients.connect("room", make_token("alice"))
    assert await client.closed_with() == (1011, "internal error")
    assert any("open failed" in r.getMessage() for r in caplog.records)
