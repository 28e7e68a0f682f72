"""A. Authentication: forged, confused, tampered and replayed tokens; refresh attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.canary import Canary, intruder_is_refused
from tests.conftest import QUIET_PINGS, SECRET, Clients, make_token, test_config
from tornado_ws.config import Config
from tornado_ws.core.registry import Registry, SessionKey


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
