"""Hostile claims in validly signed tokens, through real sockets: refused at verification.

A token the issuer really signed can still carry what the hub must not use: a ``name``
holding a lone UTF-16 surrogate (a JavaScript issuer cutting a display name mid-emoji),
CR/LF that would forge a log line, ``exp`` as a string or as 10**400, a key given twice.
Each is refused with close 1008 (WebSocket) or 401 (HTTP API) and a fixed reason, on the
HMAC fast path and on PyJWT's path alike, while a canary session keeps talking; no
ERROR is logged (the autouse fixture of tests/security/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
import websockets

from tests.canary import Canary
from tests.conftest import QUIET_PINGS, SECRET, Clients, ServerProcess, http_get, make_token, test_config
from tests.tokens import HOSTILE_TEXT, hostile_token
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry

CLAIMS = ("sub", "org", "name", "roles", "sessions")
AUDIENCE = "hub"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HS256_HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')


def signed_text(payload: str, secret: str = SECRET) -> str:
    """An HS256 token of exactly this payload text (for what json.dumps will not write)."""
    signing_input = f"{HS256_HEADER}.{b64(payload.encode())}"
    return f"{signing_input}.{b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())}"


def payload_text(member: str, *, audience: bool = False) -> str:
    """A valid payload's members after ``member`` (which may repeat or replace one of them)."""
    key = member.split('"')[1]
    members = {"sub": '"mallory"', "org": '"acme"', "exp": str(int(time.time()) + 600)}
    if audience:
        members["aud"] = f'"{AUDIENCE}"'
    return "{" + ",".join([member, *(f'"{k}":{v}' for k, v in members.items() if k != key)]) + "}"


#: (attack, hostile payload member, reason); the old code closed 1011 with an ERROR, or accepted.
HOSTILE_PAYLOADS = {
    "exp-10**400": ('"exp":1' + "0" * 400, "invalid exp claim"),
    "exp-1e400": ('"exp":1e400', "invalid exp claim"),
    "exp-as-string": ('"exp":"9999999999"', "invalid exp claim"),
    "exp-true": ('"exp":true', "invalid exp claim"),
    "nbf-as-string": ('"nbf":"0"', "invalid nbf claim"),
    "iat-10**400": ('"iat":1' + "0" * 400, "invalid iat claim"),
    "duplicate-org": ('"org":"victim","org":"acme"', "malformed token"),
}


async def refused(clients: Clients, token: str) -> tuple[int | None, str]:
    intruder = await clients.connect("standup", token)
    return await intruder.closed_with()


# -- the HMAC fast path (HS256, no audience) -------------------------------------------------------


@pytest.mark.parametrize("value", sorted(HOSTILE_TEXT))
@pytest.mark.parametrize("claim", CLAIMS)
async def test_a_claim_that_cannot_go_into_a_frame_closes_1008(
    clients: Clients, registry: Registry, claim: str, value: str
) -> None:
    canary = await Canary.open(clients)
    bob, _ = await clients.join("standup", "bob")
    async with canary.throughout():
        token = hostile_token(claim, HOSTILE_TEXT[value])
        assert await refused(clients, token) == (1008, f"invalid {claim} claim")
    await bob.assert_silent()  # no user_joined, no broken frame
    assert registry.user_connections("acme", "mallory") == 0


@pytest.mark.parametrize("attack", sorted(HOSTILE_PAYLOADS))
async def test_bad_numeric_dates_and_duplicate_keys_close_1008(
    clients: Clients, caplog: pytest.LogCaptureFixture, attack: str
) -> None:
    member, reason = HOSTILE_PAYLOADS[attack]
    canary = await Canary.open(clients)
    async with canary.throughout():
        assert await refused(clients, signed_text(payload_text(member))) == (1008, reason)
    assert not any(record.exc_info for record in caplog.records)  # no traceback either


async def test_a_refresh_with_a_hostile_token_is_refused_and_the_connection_stays(clients: Clients) -> None:
    canary = await Canary.open(clients)
    alice, _ = await clients.join("standup", "alice")
    async with canary.throughout():
        for token, reason in (
            (make_token("alice", name="Ann \ud83d"), "invalid name claim"),
            (signed_text(payload_text('"exp":1' + "0" * 400).replace("mallory", "alice")), "invalid exp claim"),
        ):
            await alice.send({"type": "refresh", "token": token})
            error = await alice.recv_type("error")
            assert (error["code"], error["message"]) == ("bad_refresh", f"refresh refused: {reason}")
    await alice.assert_silent()


async def test_the_http_api_refuses_them_with_401(http_server_client: Any) -> None:
    tokens = {
        "invalid name claim": make_token("svc", name="Ann \ud83d", roles=["service"]),
        "invalid roles claim": make_token("svc", roles=["service", "a\r\nb"]),
        "invalid exp claim": signed_text(payload_text('"exp":1' + "0" * 400)),
        "malformed token": signed_text(payload_text('"org":"victim","org":"acme"')),
    }
    for reason, token in tokens.items():
        response = await http_server_client.fetch(
            "/api/sessions/standup/messages",
            method="POST",
            body=json.dumps({"data": 1}),
            headers={"Authorization": f"Bearer {token}"},
            raise_error=False,
        )
        assert response.code == 401, reason
        assert json.loads(response.body)["error"] == {"code": "unauthorized", "message": reason}


# -- PyJWT's path: the same refusals (HS256 with an audience; RS256 goes there too, see test_auth) ---


class TestThroughPyJWT:
    @pytest.fixture
    def config(self) -> Config:
        return test_config(jwt_audience=AUDIENCE, **QUIET_PINGS)

    @staticmethod
    def token(sub: str, org: str = "acme", **claims: Any) -> str:
        return make_token(sub, org, aud=AUDIENCE, **claims)

    @pytest.mark.parametrize("claim", CLAIMS)
    async def test_a_lone_surrogate_closes_1008(self, clients: Clients, claim: str) -> None:
        canary = await Canary.open(clients, token=self.token)
        async with canary.throughout():
            token = hostile_token(claim, HOSTILE_TEXT["lone-surrogate"], aud=AUDIENCE)
            assert await refused(clients, token) == (1008, f"invalid {claim} claim")

    @pytest.mark.parametrize("attack", sorted(HOSTILE_PAYLOADS))
    async def test_bad_numeric_dates_and_duplicate_keys_close_1008(self, clients: Clients, attack: str) -> None:
        member, reason = HOSTILE_PAYLOADS[attack]
        canary = await Canary.open(clients, token=self.token)
        async with canary.throughout():
            assert await refused(clients, signed_text(payload_text(member, audience=True))) == (1008, reason)


# -- the CLI: no client value forges a text log line -------------------------------------------------

FORGED = "2030-01-01 00:00:00,000 INFO tornado_ws connect session=board org=acme user=ceo conn=f00d"
#: The start of every line the text format writes.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")


def raw_request(port: int, request_line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(65536)


async def ws_close(port: int, token: str) -> tuple[int | None, str]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/room?token={token}") as ws:
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    rcvd = info.value.rcvd
    return (rcvd.code, rcvd.reason) if rcvd else (None, "")


def _audit(server: ServerProcess) -> str:
    """Stop ``server``; assert every line it wrote is one whole log line; return its output."""
    assert server.stop() == 0
    output = server.output()
    server.log_path.unlink()
    lines = output.splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)]
    assert not any(line.startswith("2030-01-01") for line in lines)
    return output


def test_no_client_value_forges_a_text_log_line() -> None:
    # The demo route (anyone may mint tokens there) refuses such fields before signing.
    demo = ServerProcess(["--demo", "--log-level", "DEBUG"])
    forged = urllib.parse.quote(FORGED)
    try:
        for field, value in (("user", f"mallory%0d%0a{forged}"), ("name", f"M%0a{forged}"), ("org", "a%e2%80%a8b")):
            query = f"user=mallory&{field}={value}" if field != "user" else f"user={value}"
            code, body = http_get(demo.port, f"/demo/token?{query}")
            assert (code, json.loads(body)["error"]["code"]) == (400, "bad_request"), field
    finally:
        _audit(demo)
    # Tokens an issuer signed with such claims, and a path Tornado takes with a NEL in it.
    server = ServerProcess(["--jwt-secret", SECRET, "--log-level", "DEBUG"])
    try:
        for claim in ("sub", "org", "name"):
            token = hostile_token(claim, f"x\r\n{FORGED}")
            assert asyncio.run(ws_close(server.port, token)) == (1008, f"invalid {claim} claim")
        # Tornado takes a NEL (U+0085, a line break to str.splitlines and many viewers) in the path.
        answer = raw_request(server.port, b"GET /nope\x852030-01-01 HTTP/1.1")
        assert answer.startswith(b"HTTP/1.1 404")
    finally:
        output = _audit(server)
    assert "GET /nope\\x852030-01-01" in output  # the NEL was logged, escaped, on its own line
