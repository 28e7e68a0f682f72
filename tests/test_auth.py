"""Token verification: pinned algorithms, required claims, key types."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import SECRET, make_token, test_config
from tornado_ws.auth import AuthError, TokenVerifier, algorithms_for_key, issue_token, load_public_key
from tornado_ws.config import Config, ConfigError


def pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "org": "acme", "exp": int(time.time()) + 60, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def hs() -> TokenVerifier:
    return TokenVerifier.from_config(test_config())


def test_valid_token_yields_claims(hs: TokenVerifier) -> None:
    result = hs.verify(make_token("alice", "acme", name="Alice", roles=["admin"]))
    assert (result.user_id, result.org_id, result.name, result.roles) == ("alice", "acme", "Alice", ("admin",))
    assert result.expires_at is not None and result.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing token"),
        ("", "missing token"),
        ("garbage", "malformed token"),
        (make_token(ttl=-5), "token expired"),
        (make_token(nbf=int(time.time()) + 600), "token not yet valid"),
        (make_token(secret="x" * 64), "bad token signature"),
        (make_token(sub=None), "token lacks claim sub"),
        (make_token(org=None), "token lacks claim org"),
        (make_token(name=["not", "a", "string"]), "invalid name claim"),
        (make_token(org="o" * 300), "invalid org claim"),
        (make_token(roles=[1, 2]), "invalid roles claim"),
        (jwt.encode({"sub": "a", "org": "b"}, SECRET, algorithm="HS256"), "token lacks claim exp"),
        (make_token(exp="soon"), "invalid token"),
    ],
)
def test_refusals_have_fixed_safe_reasons(hs: TokenVerifier, token: str | None, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        hs.verify(token)
    assert info.value.reason == reason


def test_alg_none_is_never_accepted(hs: TokenVerifier) -> None:
    token = b64(b'{"alg":"none"}') + "." + b64(json.dumps(claims()).encode()) + "."
    with pytest.raises(AuthError, match="algorithm not allowed"):
        hs.verify(token)


def test_leeway_admits_slightly_expired_tokens() -> None:
    verifier = TokenVerifier.from_config(test_config(jwt_leeway=30))
    assert verifier.verify(make_token(ttl=-10)).user_id == "alice"


def test_rs256_public_key_and_algorithm_confusion_refused() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = pem(private)
    verifier = TokenVerifier.from_config(Config(jwt_public_key=public_pem, jwt_algorithms=("RS256",)))
    assert verifier.verify(jwt.encode(claims(), private, algorithm="RS256")).user_id == "alice"
    # The classic confusion: sign HS256 with the *public key* as the HMAC secret.
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps(claims()).encode())
    sig = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError, match="algorithm not allowed"):
        verifier.verify(f"{header}.{body}.{b64(sig)}")


def test_a_key_only_verifies_its_own_kind() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier.from_config(Config(jwt_public_key=pem(ec_key), jwt_algorithms=("ES256",)))
    assert verifier.verify(jwt.encode(claims(), ec_key, algorithm="ES256")).org_id == "acme"
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_algorithm_inferred_from_key_type() -> None:
    assert algorithms_for_key(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))) == ("RS256",)
    assert algorithms_for_key(pem(ec.generate_private_key(ec.SECP256R1()))) == ("ES256",)
    assert algorithms_for_key(pem(ed25519.Ed25519PrivateKey.generate())) == ("EdDSA",)
    with pytest.raises(ConfigError):
        load_public_key("not a key")


def test_secret_and_public_key_together_each_verify_their_algorithm() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier.from_config(
        Config(jwt_secret=SECRET, jwt_public_key=pem(private), jwt_algorithms=("HS256", "ES256"))
    )
    assert set(verifier.algorithms) == {"HS256", "ES256"}
    assert verifier.verify(make_token()).user_id == "alice"
    assert verifier.verify(jwt.encode(claims(), private, algorithm="ES256")).user_id == "alice"


def test_demo_secret_adds_hs256() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    config = Config(jwt_public_key=pem(private), jwt_algorithms=("ES256",), demo=True)
    verifier = TokenVerifier.from_config(config, demo_secret="d" * 64)
    token = issue_token("d" * 64, user_id="u", org_id="o", name="N", roles=["service"], ttl=60)
    assert verifier.verify(token).roles == ("service",)


def test_verifier_needs_a_key() -> None:
    with pytest.raises(ConfigError):
        TokenVerifier({})
