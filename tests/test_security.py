"""Hostile world: the attack catalogue of docs/security.md, one test (or one parametrized case) per attack.

Every attack runs while a *canary* keeps working: two members of another session
(``acme``/``canary``) exchange messages in the background during the attack and once
more after it. An attack "passes" when the attacker is refused or cut, nothing reaches
anyone it must not reach, no ERROR is logged, and the canary never missed a beat.

The four findings F1-F4 of docs/security.md were found by these tests (first as strict
xfails) and are fixed; their tests now guard the fixes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import json
import logging
import re
import resource
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import tornado_ws.server as server_module
from tests.conftest import (
    ROOT,
    SECRET,
    TIMEOUT,
    Client,
    Clients,
    ServerProcess,
    make_token,
    test_config,
    wait_for,
)
from tests.rawws import PROTOCOL_VIOLATIONS, raw_upgrade, read_frame, text_frame, ws_frame
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry, SessionKey
from tornado_ws.errors import CloseCode
from tornado_ws.server import Server
from tornado_ws.web.connection import Connection
from tornado_ws.web.handler import SessionHandler

# -- the canary ---------------------------------------------------------------------------------


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


# -- raw sockets: every byte under the test's control -------------------------------------------


async def cut_how(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> str:
    """Read until the server ends the connection: ``close <code>`` (a close frame) or ``eof`` (dropped)."""
    try:
        while True:
            opcode, payload = await read_frame(reader, timeout)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return f"close {code}"
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return "eof"


async def http_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends before it closes (b"" when it closes without a word)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
    return b"".join(chunks)


def close_writers(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()


# TLS 1.2 ClientHello: record header, handshake header, version, 32 random bytes, no session,
# one cipher suite (TLS_RSA_WITH_AES_128_CBC_SHA), null compression, no extensions.
TLS_CLIENT_HELLO = (
    bytes.fromhex("160301002d" + "01000029" + "0303") + bytes(range(32)) + bytes.fromhex("00" + "0002002f" + "0100")
)


# -- fixtures ---------------------------------------------------------------------------------------


#: Raw-socket attackers never answer pings: keep the server's ping timeout out of their way
#: unless a test is about it.
QUIET_PINGS: dict[str, Any] = {"ping_interval": 60, "ping_timeout": 30}


@pytest.fixture
def config() -> Config:
    return test_config(**QUIET_PINGS)


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An attack may be refused or cut, never crash a handler: no ERROR record may appear."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "errors logged: " + "; ".join(f"{r.name}: {r.getMessage()[:200]}" for r in errors)


class Served:
    """The CLI's own ``tornado_ws.server.Server`` (its HTTPServer settings) in this process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.port = server.port
        self.clients = Clients(server.port)
        self.registry = server.registry


@pytest.fixture
def serve(io_loop: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Served]]:
    """``serve(header_timeout=None, **config)`` starts a Server on a free port; stopped at teardown."""
    started: list[Served] = []

    def start(header_timeout: float | None = None, **overrides: Any) -> Served:
        if header_timeout is not None:
            monkeypatch.setattr(server_module, "HEADER_TIMEOUT", header_timeout)
        server = Server(test_config(port=0, shutdown_timeout=1, **{**QUIET_PINGS, **overrides}))
        server.start()
        served = Served(server)
        started.append(served)
        return served

    gc_threshold = gc.get_threshold()
    yield start
    for served in started:
        io_loop.run_sync(served.clients.close_all)
        io_loop.run_sync(served.server.shutdown)
        io_loop.run_sync(served.server.hub.aclose)
    SessionHandler.registry = None
    # Server.start() tunes the collector for a long-lived process (gc.freeze, high thresholds);
    # undo that so the rest of the test session runs with the defaults.
    gc.unfreeze()
    gc.set_threshold(*gc_threshold)


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted, "cannot raise the fd limit for this test"


def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


_SERVER_KEY = rsa_private_key()  # the deployment's RS256 key (tests sign legitimate RS256 tokens with it)
_ATTACKER_KEY = rsa_private_key()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{b64url(signature)}"


def claims(sub: str = "mallory", org: str = "acme", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "org": org, "iat": now, "exp": now + 600, **extra}


def hs256_signed_with(key: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def tampered(token: str, **changes: Any) -> str:
    """``token`` with its payload edited and its original signature kept."""
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    return f"{head}.{b64url(json.dumps(payload).encode())}.{sig}"


def attacker_jwk() -> dict[str, Any]:
    numbers = _ATTACKER_KEY.public_key().public_numbers()
    return {
        "kty": "RSA",
        "n": b64url(numbers.n.to_bytes(256, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey = _SERVER_KEY, **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers=headers or None)


async def intruder_is_refused(clients: Clients, token: str, session: str = "standup") -> tuple[int | None, str]:
    intruder = await clients.connect(session, token)
    return await intruder.closed_with()


# ===================================================================================================
# A. Authentication
# ===================================================================================================

#: (attack, forged token, the close reason the server must give)
FORGED_TOKENS: dict[str, tuple[Callable[[], str], str]] = {
    "alg-none": (lambda: forge({"alg": "none", "typ": "JWT"}, claims()), "token algorithm not allowed"),
    "alg-None-capitalised": (lambda: forge({"alg": "None"}, claims()), "token algorithm not allowed"),
    "alg-NONE-with-signature": (lambda: forge({"alg": "NONE"}, claims(), b"sig"), "token algorithm not allowed"),
    "alg-missing": (lambda: forge({"typ": "JWT"}, claims()), "token algorithm not allowed"),
    "alg-not-a-string": (lambda: forge({"alg": ["HS256"]}, claims()), "token algorithm not allowed"),
    "alg-HS512-not-pinned": (lambda: make_token("mallory", algorithm="HS512"), "token algorithm not allowed"),
    "rs256-with-attackers-own-key": (lambda: rs256(claims(), _ATTACKER_KEY), "token algorithm not allowed"),
    "embedded-jwk-header": (
        lambda: rs256(claims(), _ATTACKER_KEY, jwk=attacker_jwk(), kid="attacker"),
        "token algorithm not allowed",
    ),
    "hs256-signed-with-empty-key": (
        lambda: hs256_signed_with(b"", {"alg": "HS256", "typ": "JWT"}, claims()),
        "bad token signature",
    ),
    "signature-stripped": (lambda: make_token("mallory").rsplit(".", 1)[0] + ".", "bad token signature"),
    "payload-tampered-to-another-org": (lambda: tampered(make_token("mallory"), org="globex"), "bad token signature"),
    "payload-tampered-exp-extended": (
        lambda: tampered(make_token("mallory", ttl=-60), exp=4102444800),
        "bad token signature",
    ),
    "wrong-secret": (lambda: make_token("mallory", secret="guessed-" + "s" * 40), "bad token signature"),
    "expired": (lambda: make_token("mallory", ttl=-5), "token expired"),
    "not-yet-valid-nbf": (lambda: make_token("mallory", nbf=int(time.time()) + 3600), "token not yet valid"),
    "no-exp": (
        lambda: jwt.encode({"sub": "mallory", "org": "acme"}, SECRET, algorithm="HS256"),
        "token lacks claim exp",
    ),
    "non-numeric-exp": (lambda: make_token("mallory", exp="never"), "invalid exp claim"),
    "empty-org": (lambda: make_token("mallory", ""), "token lacks claim org"),
    "org-not-a-string": (
        lambda: jwt.encode(claims(org=["acme", "globex"]), SECRET, algorithm="HS256"),  # type: ignore[arg-type]
        "invalid org claim",
    ),
    "oversized-org-claim": (lambda: make_token("mallory", "o" * 5000), "invalid org claim"),
    "three-dots-garbage": (lambda: "a.b.c", "malformed token"),
    "not-base64": (lambda: "!!!.???.***", "malformed token"),
    "header-not-json": (lambda: b64url(b"nope") + "." + b64url(b"{}") + ".", "malformed token"),
}


@pytest.mark.parametrize("attack", sorted(FORGED_TOKENS))
async def test_forged_and_invalid_tokens_are_closed_1008(clients: Clients, registry: Registry, attack: str) -> None:
    make, reason = FORGED_TOKENS[attack]
    canary = await Canary.open(clients)
    bob, _ = await clients.join("standup", "bob")
    token = make()
    async with canary.throughout():
        code, got_reason = await intruder_is_refused(clients, token)
    assert (code, got_reason) == (1008, reason)
    assert token not in got_reason
    assert not any(part in got_reason for part in token.split(".") if len(part) > 8)
    await bob.assert_silent()  # no user_joined, nothing broadcast for a refused connection
    assert registry.user_connections("acme", "mallory") == 0


class TestAlgorithmConfusion:
    """Deployment verifying RS256 with a public key: the public key must never serve as an HMAC secret."""

    @pytest.fixture
    def config(self) -> Config:
        return test_config(
            jwt_secret=None, jwt_public_key=public_pem(_SERVER_KEY), jwt_algorithms=("RS256",), **QUIET_PINGS
        )

    @staticmethod
    def legit(sub: str, org: str) -> str:
        return rs256(claims(sub, org))

    @pytest.mark.parametrize(
        ("attack", "reason"),
        [
            ("hs256-signed-with-the-public-pem", "token algorithm not allowed"),
            ("hs256-signed-with-the-public-der", "token algorithm not allowed"),
            ("rs256-signed-by-attacker-key", "bad token signature"),
            ("rs256-with-embedded-attacker-jwk", "bad token signature"),
            ("alg-none", "token algorithm not allowed"),
        ],
    )
    async def test_confusion_is_refused(self, clients: Clients, attack: str, reason: str) -> None:
        pem = public_pem(_SERVER_KEY).encode()
        der = _SERVER_KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tokens = {
            "hs256-signed-with-the-public-pem": lambda: hs256_signed_with(pem, {"alg": "HS256"}, claims()),
            "hs256-signed-with-the-public-der": lambda: hs256_signed_with(der, {"alg": "HS256"}, claims()),
            "rs256-signed-by-attacker-key": lambda: rs256(claims(), _ATTACKER_KEY),
            "rs256-with-embedded-attacker-jwk": lambda: rs256(claims(), _ATTACKER_KEY, jwk=attacker_jwk()),
            "alg-none": lambda: forge({"alg": "none"}, claims()),
        }
        canary = await Canary.open(clients, token=self.legit)
        async with canary.throughout():
            assert await intruder_is_refused(clients, tokens[attack]()) == (1008, reason)


class TestMixedAlgorithms:
    """Both an HMAC secret and an RSA key: each algorithm only ever verifies with its own key."""

    @pytest.fixture
    def config(self) -> Config:
        return test_config(jwt_public_key=public_pem(_SERVER_KEY), jwt_algorithms=("HS256", "RS256"), **QUIET_PINGS)

    async def test_hs256_signed_with_the_public_key_is_a_bad_signature(self, clients: Clients) -> None:
        canary = await Canary.open(clients)
        forged = hs256_signed_with(public_pem(_SERVER_KEY).encode(), {"alg": "HS256"}, claims())
        async with canary.throughout():
            assert await intruder_is_refused(clients, forged) == (1008, "bad token signature")
            _, welcome = await clients.join("standup", "alice")  # both real kinds still work
            rs_client = await clients.connect("standup", rs256(claims("svc")))
            assert (await rs_client.recv())["user_id"] == "svc"
        assert welcome["user_id"] == "alice"


async def test_token_of_another_org_replayed_on_a_session_id_lands_in_its_own_org(
    clients: Clients, registry: Registry
) -> None:
    """A globex token on acme's session id joins *globex*/standup: nothing of acme's is seen or touched."""
    canary = await Canary.open(clients)
    alice, acme_welcome = await clients.join("standup", "alice", "acme")
    await alice.publish("acme secret 1")
    assert (await alice.recv())["seq"] == 1
    async with canary.throughout():
        # Even with acme's epoch and since=0 (a leaked resume point), no acme history is replayed.
        eve, welcome = await clients.join(
            "standup", "eve", "globex", query={"since": 0, "epoch": acme_welcome["epoch"]}
        )
        assert (welcome["org_id"], welcome["participants"], welcome["seq"]) == ("globex", [{"user_id": "eve"}], 0)
        assert welcome["recovered"] is False and welcome["epoch"] != acme_welcome["epoch"]
        await alice.publish("acme secret 2")
        assert (await alice.recv())["data"] == "acme secret 2"
        await eve.publish("globex hello")
        assert (await eve.recv())["seq"] == 1  # globex's own counter
        await eve.assert_silent()
        await alice.assert_silent()  # no user_joined from eve, no globex message
    assert registry.presence(SessionKey("acme", "standup"))["participants"] == [{"user_id": "alice"}]
    assert registry.presence(SessionKey("globex", "standup"))["participants"] == [{"user_id": "eve"}]


async def test_refresh_attacks_are_refused(clients: Clients) -> None:
    canary = await Canary.open(clients)
    mallory, _ = await clients.join("standup", "mallory")
    async with canary.throughout():
        for forged in (forge({"alg": "none"}, claims()), tampered(make_token("mallory"), exp=4102444800)):
            await mallory.send({"type": "refresh", "token": forged})
            error = await mallory.recv()
            assert (error["type"], error["code"]) == ("error", "bad_refresh")
            assert forged not in error["message"]
        await mallory.assert_silent()  # still connected, on its original expiry
        await mallory.send({"type": "refresh", "token": make_token("mallory", "globex")})  # switch org mid-connection
        assert (await mallory.recv())["code"] == "bad_refresh"
        assert (await mallory.closed_with())[0] == 1008


# ===================================================================================================
# B. Session ids
# ===================================================================================================

HOSTILE_SESSION_IDS = {
    "dot-dot-slash-encoded": "..%2F..%2Fetc%2Fpasswd",
    "dot-dot-slash-double-encoded": "%252e%252e%252fetc",
    "dot-dot-backslash": "..%5C..%5Cwindows",
    "slash": "a%2Fb",
    "nul": "room%00",
    "nul-then-suffix": "room%00.json",
    "space": "a%20b",
    "plus": "a+b",
    "crlf-log-injection": "room%0D%0AINFO%20fake%20log%20line",
    "tab": "room%09",
    "over-long-129": "x" * 129,
    "over-long-5000": "y" * 5000,
    "cyrillic-a-lookalike": "%D0%B0dmin",
    "fullwidth-A": "%EF%BC%A1dmin",
    "zero-width-space": "room%E2%80%8B",
    "combining-accent": "cafe%CC%81",
    "invalid-utf8": "%FF%FE",
    "overlong-utf8-slash": "%C0%AF",
    "empty": "",
    "percent": "100%25",
    "semicolon": "room;drop",
    "at-sign": "a@b",
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_SESSION_IDS))
async def test_hostile_session_ids_are_closed_1008(clients: Clients, registry: Registry, attack: str) -> None:
    canary = await Canary.open(clients)
    async with canary.throughout():
        assert await intruder_is_refused(clients, make_token("mallory"), HOSTILE_SESSION_IDS[attack]) == (
            1008,
            "invalid session id",
        )
    assert {key.session_id for key in registry.sessions} == {Canary.SESSION}


async def test_dot_segments_are_opaque_ids_not_paths(clients: Clients, registry: Registry) -> None:
    """``.`` and ``..`` are legal id characters; the id is only ever a dictionary key, never a path."""
    canary = await Canary.open(clients)
    async with canary.throughout():
        dots, welcome = await clients.join("...", "mallory")
        assert welcome["session_id"] == "..."
        await dots.publish("x")
        assert (await dots.recv())["session_id"] == "..."
    assert SessionKey("acme", "...") in registry.sessions


# ===================================================================================================
# C. Hostile JSON and frame contents (the connection stays; the sender alone gets an error)
# ===================================================================================================

_DEEP = 100_000
HOSTILE_FRAMES: dict[str, tuple[str | bytes, str]] = {
    # name: (raw frame, expected error code or "delivered")
    "array-nested-100k-deep": ('{"type":"message","data":' + "[" * _DEEP + "]" * _DEEP + "}", "bad_json"),
    "object-nested-100k-deep": ('{"type":"message","data":' + '{"a":' * _DEEP + "1" + "}" * _DEEP + "}", "bad_json"),
    "unclosed-100k-deep": ("[" * _DEEP, "bad_json"),
    "integer-5000-digits": ('{"type":"message","data":' + "9" * 5000 + "}", "bad_json"),
    "integer-4300-digits-is-fine": ('{"type":"message","data":' + "9" * 4300 + "}", "delivered"),
    "float-overflow-1e999": ('{"type":"message","data":1e999}', "bad_json"),
    "negative-float-overflow": ('{"type":"message","data":[-1e999]}', "bad_json"),
    "NaN": ('{"type":"message","data":NaN}', "bad_json"),
    "Infinity": ('{"type":"message","data":{"x":Infinity}}', "bad_json"),
    "-Infinity": ('{"type":"message","data":-Infinity}', "bad_json"),
    "NaN-outside-data": ('{"type":"ping","x":NaN}', "bad_json"),
    "lone-high-surrogate": ('{"type":"message","data":"\\ud800"}', "bad_json"),
    "lone-low-surrogate": ('{"type":"message","data":"a\\udfffb"}', "bad_json"),
    "lone-surrogate-in-key": ('{"type":"message","data":{"\\udbff":1}}', "bad_json"),
    "surrogate-pair-is-fine": ('{"type":"message","data":"\\ud83d\\ude00"}', "delivered"),
    "duplicate-keys": ('{"type":"message","data":1,"data":2}', "bad_json"),
    "duplicate-keys-nested": ('{"type":"message","data":{"a":1,"b":{"c":1,"c":1}}}', "bad_json"),
    "duplicate-type-smuggling": ('{"type":"ping","type":"message","data":1}', "bad_json"),
    "raw-NUL-in-string": ('{"type":"message","data":"a\x00b"}', "bad_json"),
    "raw-NUL-between-tokens": ('{"type":"message",\x00"data":1}', "bad_json"),
    "escaped-NUL-is-data": ('{"type":"message","data":"a\\u0000b"}', "delivered"),
    "escaped-NUL-key-is-data": ('{"type":"message","data":{"\\u0000":0}}', "delivered"),
    "BOM-prefix": ('\ufeff{"type":"ping"}', "bad_json"),
    "trailing-garbage": ('{"type":"ping"} x', "bad_json"),
    "two-documents": ('{"type":"ping"}{"type":"ping"}', "bad_json"),
    "empty-text": ("", "bad_json"),
    "whitespace-only": (" \t\r\n", "bad_json"),
    "javascript-comment": ('{"type":"ping"/*x*/}', "bad_json"),
    "single-quotes": ("{'type':'ping'}", "bad_json"),
    "top-level-array": ('[{"type":"message","data":1}]', "bad_frame"),
    "type-not-a-string": ('{"type":["message"],"data":1}', "bad_frame"),
    "message-without-data": ('{"type":"message"}', "bad_frame"),
    "unknown-type": ('{"type":"admin","data":1}', "unknown_type"),
    "prototype-pollution-is-opaque-data": ('{"type":"message","data":{"__proto__":{"admin":true}}}', "delivered"),
    "spoofed-identity-fields-ignored": (
        '{"type":"message","user_id":"ceo","name":"CEO","org":"globex","session_id":"other","seq":1,"data":1}',
        "delivered",
    ),
    "binary-frame": (b"\x00\x01\x02binary", "binary_not_supported"),
    "binary-json": (b'{"type":"message","data":1}', "binary_not_supported"),
}


class TestHostileJson:
    @pytest.fixture
    def config(self) -> Config:
        # Big enough for the 100k-deep documents to reach the parser (the default 64 KiB would close 1009).
        return test_config(max_message_size=1 << 20, **QUIET_PINGS)

    @pytest.mark.parametrize("attack", sorted(HOSTILE_FRAMES))
    async def test_hostile_frame_gets_its_answer_and_the_connection_stays(self, clients: Clients, attack: str) -> None:
        raw, expected = HOSTILE_FRAMES[attack]
        canary = await Canary.open(clients)
        mallory, _ = await clients.join("standup", "mallory")
        bob, _ = await clients.join("standup", "bob")
        await mallory.recv_type("user_joined")
        async with canary.throughout():
            started = time.monotonic()
            await mallory.send(raw)
            answer = await mallory.recv()
            elapsed = time.monotonic() - started
        if expected == "delivered":
            assert answer["type"] == "message", answer
            assert (answer["user_id"], answer["session_id"], answer["seq"]) == ("mallory", "standup", 1)
            assert "name" not in answer
            assert (await bob.recv()) == answer
            assert answer["data"] == json.loads(raw)["data"]
        else:
            assert (answer["type"], answer["code"]) == ("error", expected), answer
            message = answer["message"]
            assert isinstance(message, str) and 0 < len(message) <= 200  # fixed text, never the input
            await bob.assert_silent()
        assert elapsed < TIMEOUT
        await mallory.publish("still here")  # the connection stays, the stream continues
        seq = 2 if expected == "delivered" else 1
        assert (await mallory.recv())["seq"] == seq
        assert (await bob.recv())["data"] == "still here"


class TestOversizedFrames:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_message_size=1024, **QUIET_PINGS)

    @pytest.mark.parametrize(
        "raw",
        [
            "x" * 1025,
            '{"type":"message","data":' + "[" * _DEEP + "]" * _DEEP + "}",
            b"\x00" * 5000,
        ],
        ids=["text-over-limit", "100k-deep-over-limit", "binary-over-limit"],
    )
    async def test_frame_over_max_message_size_closes_1009(self, clients: Clients, raw: str | bytes) -> None:
        canary = await Canary.open(clients)
        mallory, _ = await clients.join("standup", "mallory")
        bob, _ = await clients.join("standup", "bob")
        await mallory.recv_type("user_joined")
        async with canary.throughout():
            await mallory.send(raw)
            assert (await mallory.closed_with())[0] == 1009
            assert (await bob.recv())["type"] == "user_left"

    async def test_fragmented_message_that_never_ends_closes_1009(self, clients: Clients) -> None:
        """FIN=0 then continuation frames forever: Tornado counts the fragments' total against the limit."""
        canary = await Canary.open(clients)
        mallory, _ = await clients.join("standup", "mallory")
        bob, _ = await clients.join("standup", "bob")
        await mallory.recv_type("user_joined")
        fragments_sent = 0

        async def endless() -> AsyncIterator[str]:
            nonlocal fragments_sent
            yield '{"type":"message","data":"'
            for _ in range(10_000):  # bounded: 10 MB if nothing stopped it
                fragments_sent += 1
                yield "x" * 1000
                # Paced so the close frame is read before the next write meets the closed socket
                # (which would turn into a reset and hide the close code from the client).
                await asyncio.sleep(0.02)

        async with canary.throughout():
            with pytest.raises(websockets.ConnectionClosed) as info:
                await mallory.ws.send(endless())
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            assert (await bob.recv())["type"] == "user_left"
        assert fragments_sent <= 3  # cut by the fragment that took the total past 1024 bytes


class TestStalledFrames:
    """Frames that stop half-way, from a peer that stops answering pings: the ping timeout drops them
    (at once, without a close handshake a dead peer would not answer)."""

    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0.3, ping_timeout=0.3, max_message_size=4096)

    async def test_half_sent_frames_are_cut_by_the_ping_timeout(
        self, clients: Clients, port: int, registry: Registry
    ) -> None:
        canary = await Canary.open(clients)
        bob, _ = await clients.join("standup", "bob")
        stalls = {
            "fragment-never-finished": ws_frame(0x1, b'{"type":"message","data":"', fin=False)
            + ws_frame(0x0, b"x" * 100, fin=False),
            "header-only": b"\x81",
            "length-but-no-payload": ws_frame(0x1, b"", length=1000)[:8],
            "payload-cut-short": ws_frame(0x1, b"y" * 500)[:100],
        }
        writers = []
        try:
            readers = {}
            for name, data in stalls.items():
                reader, writer, _ = await raw_upgrade(port, "standup", make_token(f"stall-{name}"))
                assert (await bob.recv())["type"] == "user_joined"
                writer.write(data)
                writers.append(writer)
                readers[name] = reader
            started = time.monotonic()
            async with canary.throughout(min_rounds=1):
                # Nobody answers the pings: each connection is dropped after interval + timeout ...
                results = await asyncio.gather(*(cut_how(r, timeout=10) for r in readers.values()))
                elapsed = time.monotonic() - started
                # ... and leaves its session at once.
                left = {(await bob.recv_type("user_left", timeout=5))["user_id"] for _ in stalls}
            assert results == ["eof"] * len(stalls)
            assert elapsed < 0.3 + 0.3 + 1.5  # interval + timeout + the sweeper's period and slack
            assert left == {f"stall-{name}" for name in stalls}
            assert registry.connection_count == 3  # the canary pair and bob
        finally:
            close_writers(writers)


class TestStalledFragmentWithPongs:
    """A client that stalls mid-message but keeps answering pings is held until its token expires (4001).

    What it holds meanwhile is bounded by --max-message-size (the fragments buffered so far).
    """

    @pytest.fixture
    def config(self) -> Config:
        return test_config(ping_interval=0.2, ping_timeout=0.2, max_message_size=4096)

    async def test_stalled_fragment_is_cut_when_the_token_expires(self, clients: Clients) -> None:
        canary = await Canary.open(clients)
        mallory = await clients.connect("standup", make_token("mallory", ttl=2))
        assert (await mallory.recv())["type"] == "welcome"
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[str]:
            yield '{"type":"message","data":"'
            yield "x" * 1000
            await never.wait()  # the websockets client keeps answering pings meanwhile
            yield '"}'

        sending = asyncio.ensure_future(mallory.ws.send(stalled()))
        async with canary.throughout(min_rounds=1):
            code, reason = await mallory.closed_with(timeout=5)
        assert (code, reason) == (4001, "token expired")
        never.set()
        with pytest.raises(websockets.ConnectionClosed):
            await sending


# -- protocol violations on a raw socket: cut at once --------------------------------------------


@pytest.mark.parametrize("attack", sorted(PROTOCOL_VIOLATIONS))
async def test_protocol_violations_cut_the_connection(
    clients: Clients, port: int, registry: Registry, attack: str
) -> None:
    canary = await Canary.open(clients)
    bob, _ = await clients.join("standup", "bob")
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
    try:
        assert (await bob.recv())["type"] == "user_joined"
        frame, code = PROTOCOL_VIOLATIONS[attack]
        async with canary.throughout():
            writer.write(frame)
            assert await cut_how(reader) == f"close {code}"
            assert await reader.read() == b""  # then the server hangs up
            left = await bob.recv()
            assert (left["type"], left["user_id"]) == ("user_left", "mallory")
        await bob.assert_silent()
        assert registry.user_connections("acme", "mallory") == 0
    finally:
        writer.close()


# -- floods ------------------------------------------------------------------------------------------


async def test_ping_flood_is_answered_coalesced_and_starves_no_one(
    clients: Clients, port: int, registry: Registry
) -> None:
    """30 000 WebSocket PINGs (3.9 MB) while not reading: once the socket backs up, the server keeps
    at most one pong pending (answering only the latest ping), so its backlog stays tiny.

    Control frames are not counted by --rate-limit (docs/security.md O1); what bounds a flood is TCP
    back-pressure and the per-frame cost, and each connection reads at most 64 KiB per loop pass.
    """
    canary = await Canary.open(clients)
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"), rcvbuf=4096)
    (participant,) = [m.peer for m in registry.members() if m.user_id == "mallory"]
    assert isinstance(participant, Connection)
    pings, chunk = 30_000, 1_000
    ping = ws_frame(0x9, b"p" * 125)
    backlog = 0
    try:
        async with canary.throughout(min_rounds=1):
            started = time.monotonic()
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            for _ in range(pings // chunk):
                writer.write(ping * chunk)
                await writer.drain()
                backlog = max(backlog, participant.pending_bytes)
            writer.write(text_frame({"type": "ping"}))  # the application pong comes after every PING was read
            writer.transport.resume_reading()  # type: ignore[attr-defined]
            pongs = 0
            while (frame := await read_frame(reader, timeout=30))[0] == 0xA:
                pongs += 1
            elapsed = time.monotonic() - started
            assert frame == (0x1, b'{"type":"pong"}')
        assert backlog < 64 * 1024
        assert 1 <= pongs < pings  # coalesced
        assert registry.user_connections("acme", "mallory") == 1  # not cut: pings are legal
        print(
            f"\nping flood: {pings} pings in {elapsed:.2f}s, {pongs} pongs, max backlog {backlog} B, "
            f"canary worst {canary.worst * 1000:.0f} ms"
        )
    finally:
        writer.close()


class TestControlFrameFloodWithRateLimit:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(rate_limit=20, rate_burst=40)

    @pytest.mark.parametrize("opcode", [0x9, 0xA])
    async def test_ping_or_pong_flood_is_cut_1008(self, clients: Clients, port: int, opcode: int) -> None:
        """With --rate-limit on, control frames get ten times the message budget; beyond it: 1008."""
        canary = await Canary.open(clients)
        reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
        try:
            async with canary.throughout():
                writer.write(ws_frame(opcode, b"x") * 2_000)
                await writer.drain()
                while (frame := await read_frame(reader, timeout=10))[0] != 0x8:
                    pass
                code = int.from_bytes(frame[1][:2], "big")
                assert (code, frame[1][2:]) == (1008, b"ping flood")
        finally:
            writer.close()


async def test_unsolicited_pong_flood_is_ignored(clients: Clients, port: int) -> None:
    canary = await Canary.open(clients)
    reader, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"))
    try:
        async with canary.throughout():
            writer.write(ws_frame(0xA, b"x" * 125) * 20_000)
            await writer.drain()
            writer.write(text_frame({"type": "ping"}))
            assert await read_frame(reader, timeout=30) == (0x1, b'{"type":"pong"}')
    finally:
        writer.close()


class TestFloodsAgainstLimits:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(rate_limit=20, rate_burst=40, max_outbound_buffer=16 * 1024, **QUIET_PINGS)

    async def test_frame_flood_without_reading_is_rate_limited_then_cut_4008(
        self, clients: Clients, port: int, registry: Registry, app: Any
    ) -> None:
        """Every dropped frame costs the attacker an error frame; never reading them makes it a slow consumer."""
        canary = await Canary.open(clients)
        bob, _ = await clients.join("standup", "bob")
        _, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"), rcvbuf=4096)
        assert (await bob.recv())["type"] == "user_joined"
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        burst = text_frame({"type": "ping"}) * 1000
        try:
            async with canary.throughout(min_rounds=1):
                for _ in range(200):  # at most 200 000 frames
                    if registry.user_connections("acme", "mallory") == 0:
                        break
                    writer.write(burst)
                    with contextlib.suppress(ConnectionError):
                        await asyncio.wait_for(writer.drain(), 1)
                left = await bob.recv_type("user_left", timeout=10)
            assert left["user_id"] == "mallory"
            state = app.settings["state"]
            assert state.metrics.slow_consumers == 1
            assert state.metrics.rate_limited > 0
        finally:
            writer.close()


class TestSlowReader:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_outbound_buffer=16 * 1024, **QUIET_PINGS)

    async def test_reader_that_stops_in_a_busy_session_is_cut_4008(
        self, clients: Clients, port: int, registry: Registry, app: Any
    ) -> None:
        canary = await Canary.open(clients)
        publisher, _ = await clients.join("standup", "publisher")
        _, writer, _ = await raw_upgrade(port, "standup", make_token("mallory"), rcvbuf=4096)
        writer.transport.pause_reading()  # type: ignore[attr-defined]
        try:
            async with canary.throughout(min_rounds=1):
                for n in range(5000):
                    if registry.user_connections("acme", "mallory") == 0:
                        break
                    await publisher.publish({"n": n, "pad": "z" * 2000})
                    if n % 10 == 9:
                        await asyncio.sleep(0.01)
                left = await publisher.recv_type("user_left")
            assert left["user_id"] == "mallory"
            assert app.settings["state"].metrics.slow_consumers == 1
        finally:
            writer.close()


# ===================================================================================================
# D. The HTTP layer, before any WebSocket exists
# ===================================================================================================


async def test_300_half_open_connections_do_not_stop_others(serve: Callable[..., Served]) -> None:
    """Slowloris: 320 connections each send half a request line and stop; everyone else carries on."""
    served = serve()  # the CLI's HTTPServer settings, 30 s header timeout
    half_open = 320
    raise_fd_limit(4 * half_open + 256)
    canary = await Canary.open(served.clients)
    writers: list[asyncio.StreamWriter] = []
    try:
        async with canary.throughout(min_rounds=1):
            for n in range(half_open):
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(f"GET /ws/standup?token={n}".encode())  # no CRLF, ever
                writers.append(writer)
                if n % 40 == 39:
                    await writer.drain()
            started = time.monotonic()
            newcomer, welcome = await served.clients.join("standup", "newcomer")
            await newcomer.publish("made it")
            assert (await newcomer.recv())["data"] == "made it"
            assert time.monotonic() - started < 2.0
        assert welcome["participant_count"] == 1
        assert served.registry.connection_count == 3
    finally:
        close_writers(writers)


async def test_slowloris_is_cut_by_the_header_timeout(serve: Callable[..., Served]) -> None:
    """Half a request, or one byte at a time: the header timeout is a deadline for the whole head."""
    served = serve(header_timeout=0.5)
    canary = await Canary.open(served.clients)
    writers: list[asyncio.StreamWriter] = []
    try:
        async with canary.throughout(min_rounds=1):
            readers = []
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"GET /ws/standup HTTP/1.1\r\nHost: x\r\n")
                writers.append(writer)
                readers.append(reader)
            dribble_reader, dribbler = await asyncio.open_connection("127.0.0.1", served.port)
            writers.append(dribbler)
            started = time.monotonic()

            async def dribble() -> None:
                for byte in b"GET /ws/standup HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                    if dribble_reader.at_eof():
                        return
                    dribbler.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            dribbling = asyncio.ensure_future(dribble())
            answers = await asyncio.gather(*(http_answer(r, timeout=5) for r in [*readers, dribble_reader]))
            elapsed = time.monotonic() - started
            dribbling.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dribbling
        assert answers == [b""] * 21  # closed without a word
        assert elapsed < 3.0
    finally:
        close_writers(writers)


RAW_JUNK = {
    "tls-client-hello": TLS_CLIENT_HELLO,
    "junk-with-crlf": b"\x00\xff garbage\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "nul-bytes": b"\x00" * 4096 + b"\r\n\r\n",
    "bare-crlfs": b"\r\n\r\n",
    "http-0.9": b"GET /\r\n\r\n",
    "bad-version": b"GET /ws/standup HTTP/7.0\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET /ws/standup HTTP/1.1\r\nHost x\r\n\r\n",
    "negative-content-length": b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "conflicting-content-lengths": (
        b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
    "bad-chunked-encoding": (
        b"POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    "request-line-70kb": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-value-70kb": b"GET /ws/standup HTTP/1.1\r\nAuthorization: Bearer " + b"e" * 70_000 + b"\r\n\r\n",
    "10k-headers": b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
}


@pytest.mark.parametrize("attack", sorted(RAW_JUNK))
async def test_non_http_bytes_and_oversized_heads_are_refused(serve: Callable[..., Served], attack: str) -> None:
    """400 or a silent close (the head limit is 64 KiB); a TLS hello waits for the header timeout."""
    served = serve(header_timeout=0.5)
    canary = await Canary.open(served.clients)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        async with canary.throughout():
            writer.write(RAW_JUNK[attack])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            answer = await http_answer(reader, timeout=5)
        assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:200]
        code, body = await asyncio.to_thread(http_get, served.port, "/healthz")
        assert (code, json.loads(body)) == (200, {"status": "ok"})
    finally:
        writer.close()


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


async def test_huge_request_body_is_refused_before_it_is_buffered(serve: Callable[..., Served]) -> None:
    served = serve()
    canary = await Canary.open(served.clients)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        async with canary.throughout():
            writer.write(
                b"POST /api/sessions/standup/messages HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
            )
            await writer.drain()
            # A bounded server refuses at once (Content-Length too long): 413 or a close, within 1 s.
            try:
                answer = await http_answer(reader, timeout=1)
            except TimeoutError:
                answer = None
        assert answer is not None, "the server is waiting to buffer a 50 MB body"
    finally:
        writer.close()


async def test_body_that_never_finishes_is_cut(serve: Callable[..., Served]) -> None:
    served = serve(header_timeout=0.3)
    canary = await Canary.open(served.clients)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        async with canary.throughout():
            writer.write(
                b'POST /api/sessions/standup/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"data":'
            )
            await writer.drain()
            try:
                answer = await http_answer(reader, timeout=1.5)
            except TimeoutError:
                answer = None
        assert answer is not None, "the half-sent body still holds the connection 1.5 s later (timeout: 0.3 s)"
    finally:
        writer.close()


async def test_half_open_connections_at_the_fd_limit_do_not_lock_others_out(io_loop: Any, tmp_path: Any) -> None:
    """The same slowloris against a process with a low fd limit (a shell default is 1024; 256 here)."""
    limit, half_open = 256, 300
    raise_fd_limit(2 * half_open + 256)
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "tornado_ws", "--port", "0", "--jwt-secret", SECRET]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f'ulimit -n {limit} && exec "$0" "$@"', *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    writers: list[asyncio.StreamWriter] = []
    clients: Clients | None = None
    try:
        port = await _listening_port(log_path, proc)
        clients = Clients(port)
        canary = await Canary.open(clients)
        for n in range(half_open):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /ws/standup?token={n}".encode())
            writers.append(writer)
        async with canary.throughout():
            newcomer = await asyncio.wait_for(clients.connect("standup", make_token("newcomer")), 3)
            assert (await newcomer.recv())["type"] == "welcome"
        lines = log_path.read_text(errors="replace").count("\n")
        assert lines < 200, f"{lines} log lines: the accept loop is spinning on EMFILE"
    finally:
        close_writers(writers)
        if clients is not None:
            await clients.close_all()
        proc.terminate()
        proc.wait(15)
        log_path.unlink(missing_ok=True)


async def _listening_port(log_path: Any, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = re.search(rb"listening on http://[^:]+:(\d+)/", log_path.read_bytes())
        if match:
            return int(match.group(1))
        assert proc.poll() is None, log_path.read_text()
        await asyncio.sleep(0.02)
    raise AssertionError("server did not start")


# -- cross-site WebSocket hijacking ----------------------------------------------------------------


async def test_cross_site_origins_are_refused_403_before_the_upgrade(
    clients: Clients, port: int, registry: Registry, app: Any
) -> None:
    """Default rule: the Origin's host:port must equal the Host header (same-origin browsers only)."""
    canary = await Canary.open(clients)
    hostile = [
        "https://attacker.example",
        "null",
        f"http://127.0.0.1:{port}.attacker.example",
        f"http://127.0.0.1:{port + 1}",
        f"http://attacker.example/127.0.0.1:{port}",
        "file://",
    ]
    async with canary.throughout():
        for origin in hostile:
            with pytest.raises(websockets.InvalidStatus) as info:
                await clients.connect("standup", make_token("victim"), origin=origin)
            assert info.value.response.status_code == 403, origin
        same, welcome = await clients.join("standup", "victim")  # non-browser clients send no Origin
    assert welcome["participant_count"] == 1
    await same.close()
    text = app.settings["state"].metrics.render().decode()
    assert f'tornado_ws_handshakes_refused_total{{reason="origin"}} {float(len(hostile))}' in text


class TestAllowedOriginsList:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(allowed_origins=("https://app.example",), **QUIET_PINGS)

    @pytest.mark.parametrize(
        "origin",
        [
            "https://app.example.attacker.example",
            "https://attacker-app.example",
            "http://app.example",
            "https://app.example:8443",
            "https://app.examplex",
            "null",
            "https://app.example.",
        ],
    )
    async def test_only_exact_listed_origins_pass(self, clients: Clients, origin: str) -> None:
        canary = await Canary.open(clients)
        async with canary.throughout():
            with pytest.raises(websockets.InvalidStatus) as info:
                await clients.connect("standup", make_token("victim"), origin=origin)
            assert info.value.response.status_code == 403
            ok = await clients.connect("standup", make_token("victim"), origin="https://APP.example")
            assert (await ok.recv())["type"] == "welcome"


# ===================================================================================================
# E. Token leakage
# ===================================================================================================


def token_parts(*tokens: str) -> list[str]:
    parts = [SECRET]
    for token in tokens:
        parts.append(token)
        parts.extend(p for p in token.split(".")[1:] if len(p) > 8)  # payload and signature
    return parts


async def test_tokens_never_reach_logs_frames_close_reasons_or_metrics(
    clients: Clients, http_server_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process, without the CLI's redacting log filter: what is redacted at the source."""
    canary = await Canary.open(clients)
    good = make_token("alice")
    expired = make_token("alice", ttl=-5)
    other = make_token("alice", "globex")
    async with canary.throughout():
        refused = await clients.connect("standup", expired)
        _, reason1 = await refused.closed_with()
        header_refused = await clients.connect("standup", headers={"Authorization": f"Bearer {expired}"})
        _, reason2 = await header_refused.closed_with()
        alice = await clients.connect("standup", good, query={"since": 0, "epoch": "x"})
        assert (await alice.recv())["type"] == "welcome"
        await alice.send({"type": "refresh", "token": expired})
        error1 = await alice.recv()
        await alice.send({"type": "refresh", "token": other})
        error2 = await alice.recv()
        _, reason3 = await alice.closed_with()
        api = await http_server_client.fetch(
            "/api/sessions/standup/messages",
            method="POST",
            body=b'{"data":1}',
            headers={"Authorization": f"Bearer {expired}"},
            raise_error=False,
        )
        metrics = await http_server_client.fetch(f"/metrics?token={good}")
    visible = "\n".join(
        [reason1, reason2, reason3, json.dumps([error1, error2]), api.body.decode(), metrics.body.decode()]
        + [record.getMessage() for record in caplog.records]
    )
    assert "[redacted]" in visible  # the access log line of each ?token= request
    for secret in token_parts(good, expired, other):
        assert secret not in visible
    labels = re.findall(r'(\w+)="([^"]*)"', metrics.body.decode())
    assert labels and all(re.fullmatch(r"[A-Za-z0-9_.+-]{1,40}", value) for _, value in labels), labels


async def test_cli_output_never_contains_a_token_whatever_the_attacker_puts_where(io_loop: Any) -> None:
    """The CLI as deployed (DEBUG logging): tokens in the query, the header, the path, the Origin,
    refresh frames, HTTP versions and 70 KB request lines; and a log-injection attempt."""
    server = ServerProcess(["--jwt-secret", SECRET, "--log-level", "DEBUG"])
    clients = Clients(server.port)
    good, expired = make_token("alice"), make_token("alice", ttl=-5)
    try:
        canary = await Canary.open(clients)
        async with canary.throughout():
            for attempt in (
                clients.connect("standup", expired),
                clients.connect("standup", headers={"Authorization": f"Bearer {expired}"}),
                clients.connect(good, good),  # the token as the session id
                clients.connect("room%0D%0AERROR%20injected", good),  # CRLF in the path
            ):
                await (await attempt).closed_with()
            with pytest.raises(websockets.InvalidStatus):
                await clients.connect("standup", good, origin=f"https://{good}.example")
            alice = await clients.connect("standup", good)
            assert (await alice.recv())["type"] == "welcome"
            await alice.send({"type": "refresh", "token": expired})
            assert good not in json.dumps(await alice.recv())
            for junk in (
                f"GET /ws/standup?token={good} HTTP/{good}\r\n\r\n".encode(),
                b"GET /?token=" + good.encode() * 600 + b" HTTP/1.1\r\n\r\n",
                f"GET /nope?token={good}&access_token={good} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    writer.write(junk)
                    await http_answer(reader, timeout=5)
                finally:
                    writer.close()
            code, _ = await asyncio.to_thread(
                http_get, server.port, f"/metrics?token={good}", {"Authorization": f"Bearer {good}"}
            )
            assert code == 200
        await clients.close_all()
    finally:
        assert server.stop() == 0
    output = server.output()
    server.log_path.unlink(missing_ok=True)
    assert "refused session=" in output and "[redacted]" in output
    for secret in token_parts(good, expired):
        assert secret not in output and secret[:24] not in output
    assert not any(line.startswith("ERROR injected") for line in output.splitlines())
    assert "Traceback" not in output


async def test_clients_cannot_choose_metric_label_values(clients: Clients, port: int, app: Any) -> None:
    canary = await Canary.open(clients)
    async with canary.throughout():
        for code in range(3000, 3040):
            client, _ = await clients.join("standup", f"labeller-{code}")
            await client.ws.close(code=code)
        _, writer, _ = await raw_upgrade(port, "standup", make_token("raw-labeller"))
        writer.write(ws_frame(0x8, struct.pack("!H", 64999)))  # not even a legal close code
        await wait_for(lambda: app.settings["registry"].user_connections("acme", "raw-labeller") == 0)
        writer.close()
    text = app.settings["state"].metrics.render().decode()
    codes = set(re.findall(r'tornado_ws_disconnects_total\{code="([^"]*)"\}', text))
    fixed = {str(int(c)) for c in CloseCode} | {"1005", "1006", "other"}
    assert codes <= fixed, f"client-chosen label values: {sorted(codes - fixed)[:5]} ... ({len(codes - fixed)})"


# ===================================================================================================
# F. Memory exhaustion
# ===================================================================================================


class TestSessionCap:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_sessions_per_org=4, **QUIET_PINGS)  # the canary's session is one of acme's 4

    async def test_sessions_beyond_the_org_cap_are_refused_and_other_orgs_unaffected(
        self, clients: Clients, http_server_client: Any, registry: Registry
    ) -> None:
        canary = await Canary.open(clients)
        async with canary.throughout():
            for n in range(3):
                await clients.join(f"s{n}", "mallory")
            over = await clients.connect("s-over", make_token("mallory"))
            assert await over.closed_with() == (1013, "too many sessions in this organization")
            response = await http_server_client.fetch(
                "/api/sessions/s-api/messages",
                method="POST",
                body=b'{"data":1}',
                headers={"Authorization": f"Bearer {make_token('svc', roles=['service'])}"},
                raise_error=False,
            )
            assert response.code == 429
            _, welcome = await clients.join("s-over", "eve", "globex")
            assert welcome["participant_count"] == 1
        assert sum(1 for key in registry.sessions if key.org_id == "acme") == 4

    async def test_one_member_cycling_sessions_fills_its_own_orgs_cap(self, clients: Clients) -> None:
        """Documented residual risk: emptied sessions keep their stream for --history-ttl and still
        count, so one member who joins and leaves N new sessions blocks new sessions for the whole org
        for history-ttl seconds. Other orgs are unaffected (what the cap is for)."""
        canary = await Canary.open(clients)
        async with canary.throughout():
            for n in range(3):
                mallory, _ = await clients.join(f"cycle-{n}", "mallory")
                await mallory.close()
            colleague = await clients.connect("daily", make_token("carol"))
            assert (await colleague.closed_with())[0] == 1013
            _, welcome = await clients.join("daily", "eve", "globex")
            assert welcome["org_id"] == "globex"


class TestConnectionCaps:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(max_connections_per_user=3, max_connections=6, **QUIET_PINGS)  # canary 2 + 4

    async def test_per_user_and_process_connection_caps(self, clients: Clients, registry: Registry) -> None:
        canary = await Canary.open(clients)
        async with canary.throughout():
            for n in range(3):
                await clients.join(f"tab{n}", "mallory")
            fourth = await clients.connect("tab3", make_token("mallory"))
            assert await fourth.closed_with() == (1013, "too many connections for this user")
            await clients.join("standup", "trudy")
            with pytest.raises(websockets.InvalidStatus) as info:
                await clients.connect("standup", make_token("oscar"))
            assert info.value.response.status_code == 503
        assert registry.connection_count == 6


class TestHistoryIsBounded:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(history_size=20, max_message_size=2048, **QUIET_PINGS)

    async def test_history_keeps_history_size_messages_whatever_is_published(
        self, clients: Clients, registry: Registry
    ) -> None:
        canary = await Canary.open(clients)
        mallory, _ = await clients.join("standup", "mallory")
        pad = "h" * (2048 - 64)
        async with canary.throughout():
            for n in range(300):
                await mallory.publish({"n": n, "pad": pad})
            for _ in range(300):
                await mallory.recv_type("message")
        stream = registry.sessions[SessionKey("acme", "standup")].stream
        assert len(stream) == 20
        kept = sum(len(frame.text) for _, frame in stream._frames)
        assert kept <= 20 * (2048 + 200)  # per session: history_size x (max_message_size + envelope)
