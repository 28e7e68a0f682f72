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
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

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
        (make_token(exp="soon"), "invalid exp claim"),
    ],
)
def test_refusals_have_fixed_safe_reasons(hs: TokenVerifier, token: str | None, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        hs.verify(token)
    assert info.value.reason == reason


def test_raw_is_the_whole_payload_read_only_and_out_of_repr(hs: TokenVerifier) -> None:
    claims = hs.verify(make_token(plan="pro", projects=["p1"], secret_note="do-not-log"))
    assert claims.raw["plan"] == "pro" and claims.raw["projects"] == ["p1"] and claims.raw["sub"] == "alice"
    with pytest.raises(TypeError):
        claims.raw["plan"] = "free"  # type: ignore[index]
    assert "do-not-log" not in repr(claims) and claims.raw["plan"] == "pro"


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


def test_demo_secret_is_the_hs256_key() -> None:
    config = Config(demo=True)
    verifier = TokenVerifier.from_config(config, demo_secret="d" * 64)
    token = issue_token("d" * 64, user_id="u", org_id="o", name="N", roles=["service"], ttl=60)
    assert verifier.verify(token).roles == ("service",)


def test_verifier_needs_a_key() -> None:
    with pytest.raises(ConfigError):
        TokenVerifier({})


# -- the HMAC fast path gives PyJWT's answer, only faster -------------------------------------------


def outcome(verify: Any, token: str) -> Any:
    try:
        return verify(token)
    except AuthError as exc:
        return ("refused", exc.reason)


CLAIM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "alice", "123", str(int(time.time()) + 60), "x" * 300]),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
TIME_VALUES = st.one_of(CLAIM_VALUES, st.integers(-120, 120).map(lambda d: int(time.time()) + d))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    valid_base=st.booleans(),
    claims=st.fixed_dictionaries(
        {},
        optional={
            "sub": CLAIM_VALUES,
            "org": CLAIM_VALUES,
            "name": CLAIM_VALUES,
            "exp": TIME_VALUES,
            "nbf": TIME_VALUES,
            "iat": TIME_VALUES,
            "jti": CLAIM_VALUES,
            "roles": CLAIM_VALUES,
            "sessions": CLAIM_VALUES,
        },
    ),
    header=st.fixed_dictionaries(
        {}, optional={"typ": st.sampled_from(["JWT", "jwt", 1]), "kid": st.text(max_size=3), "crit": st.just(["x"])}
    ),
    alg=st.sampled_from(["HS256", "HS384", "HS512", "none"]),
    secret=st.sampled_from([SECRET, "another-secret-that-is-long-enough-for-hs512-" + "y" * 30]),
    mangle=st.sampled_from(["none", "pad", "junk", "segments", "payload-not-object", "sig-bit"]),
)
def test_the_fast_path_agrees_with_pyjwt_on_every_token(
    valid_base: bool, claims: dict[str, Any], header: dict[str, Any], alg: str, secret: str, mangle: str
) -> None:
    if valid_base:  # half the tokens are valid or nearly, so acceptance is compared too, not only refusals
        near = {k: v for k, v in claims.items() if k in ("nbf", "iat", "jti") and isinstance(v, int | str)}
        claims = {"sub": "alice", "org": "acme", "exp": int(time.time()) + 60, **near}
        alg, mangle = ("HS256" if alg == "none" else alg), ("none" if mangle == "junk" else mangle)
    keys = {"HS256": SECRET, "HS384": SECRET, "HS512": SECRET}
    verifier = TokenVerifier(keys, leeway=5)
    pyjwt_only = TokenVerifier(keys, leeway=5)
    pyjwt_only._hmac_keys.clear()
    head = b64(json.dumps({"alg": alg, **header}).encode())
    body = b64(json.dumps(claims if mangle != "payload-not-object" else [claims]).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), digest).digest()
    if mangle == "sig-bit":
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    token = f"{head}.{body}.{b64(sig)}"
    if mangle == "pad":
        token += "=" * (-len(b64(sig)) % 4 or 1)
    elif mangle == "junk":
        token = token[:5] + "!" + token[5:]
    elif mangle == "segments":
        token += ".x"
    fast = outcome(verifier.verify, token)
    assert fast == outcome(pyjwt_only.verify, token)
    event("accepted" if not isinstance(fast, tuple) else "refused")


def test_the_fast_path_is_taken_for_plain_tokens_and_off_with_audience_or_issuer() -> None:
    token = make_token("alice")
    plain = TokenVerifier.from_config(test_config())
    assert plain._fast_payload(token) is not None
    for extra in ({"jwt_audience": "app"}, {"jwt_issuer": "idp"}):
        assert TokenVerifier.from_config(test_config(**extra))._fast_payload(token) is None
    pem_like = TokenVerifier({"HS256": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"})
    assert pem_like._fast_payload(token) is None  # PyJWT refuses such a secret; no shortcut around that


# -- hostile claims: what goes into a frame must encode; times are numbers; no duplicate keys -------

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)

#: The three ways a token is verified; every refusal below must read the same on each.
PATHS: dict[str, tuple[Any, str]] = {
    "fast": (lambda: TokenVerifier.from_config(test_config()), "HS256"),
    "pyjwt-audience": (lambda: TokenVerifier.from_config(test_config(jwt_audience="app")), "HS256"),
    "pyjwt-rs256": (
        lambda: TokenVerifier.from_config(Config(jwt_public_key=pem(_RSA), jwt_algorithms=("RS256",))),
        "RS256",
    ),
}


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sign_text(path: str, payload: str, header: str | None = None) -> str:
    """A token of exactly this JSON text, validly signed for ``path``'s verifier."""
    alg = PATHS[path][1]
    signing_input = f"{b64((header or json.dumps({'alg': alg, 'typ': 'JWT'})).encode())}.{b64(payload.encode())}"
    if alg == "RS256":
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(signing_input.encode(), _RSA)
    else:
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def base_text(path: str, omit: str = "") -> str:
    """The JSON members of a valid payload for ``path`` (minus ``omit``), to put hostile members next to."""
    members = {"sub": '"alice"', "org": '"acme"', "exp": str(int(time.time()) + 60)}
    if path == "pyjwt-audience":
        members["aud"] = '"app"'
    return ",".join(f'"{key}":{value}' for key, value in members.items() if key != omit)


def token_with(path: str, **claims: Any) -> str:
    base = json.loads("{" + base_text(path) + "}")
    return sign_text(path, json.dumps({**base, **claims}))  # ensure_ascii: "\ud83d" as JS writes it


def refusal(path: str, token: str) -> str | None:
    try:
        PATHS[path][0]().verify(token)
    except AuthError as exc:
        return exc.reason
    return None


UNSAFE_TEXT = {
    "lone-high-surrogate": "Ann \ud83d",  # a JS issuer cutting "Ann 👩" mid-emoji
    "lone-low-surrogate": "\udc69",
    "crlf": "alice\r\n2030-01-01 INFO tornado_ws connect user=ceo",
    "lf": "a\nb",
    "cr": "a\rb",
    "tab": "a\tb",
    "nul": "a\x00b",
    "esc": "\x1b[2J",
    "del": "a\x7fb",
    "nel": "a\x85b",
    "c1-csi": "\x9b31m",
    "line-separator": "a\u2028b",
    "paragraph-separator": "a\u2029b",
}


@pytest.mark.parametrize("value", sorted(UNSAFE_TEXT))
@pytest.mark.parametrize("claim", ["sub", "org", "name", "roles", "sessions"])
def test_claims_that_cannot_go_into_a_frame_or_a_log_line_are_refused(path: str, claim: str, value: str) -> None:
    text = UNSAFE_TEXT[value]
    token = token_with(path, **{claim: ["fine", text] if claim in ("roles", "sessions") else text})
    assert refusal(path, token) == f"invalid {claim} claim"


def test_unicode_names_that_encode_are_accepted(path: str) -> None:
    name = "Zoë 👩\u200d💻 李 \u202eevil"  # ZWJ and bidi marks are format characters, not controls
    claims = PATHS[path][0]().verify(token_with(path, name=name, roles=["é"], sessions=["räum-*"]))
    assert (claims.name, claims.roles, claims.sessions) == (name, ("é",), ("räum-*",))


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ('"exp":1' + "0" * 400, "invalid exp claim"),  # json reads it; float() overflowed (1011 before)
        ('"exp":1e400', "invalid exp claim"),  # inf
        ('"exp":"9999999999"', "invalid exp claim"),  # int() read it; PyJWT accepted it
        ('"exp":true', "invalid exp claim"),
        ('"exp":[1]', "invalid exp claim"),
        ('"exp":-1', "invalid exp claim"),
        ('"exp":100000000000', "invalid exp claim"),  # 1e11: the year 5138
        ('"exp":null', "token lacks claim exp"),
        ('"nbf":"0"', "invalid nbf claim"),
        ('"nbf":1e400', "invalid nbf claim"),
        ('"nbf":false', "invalid nbf claim"),
        ('"nbf":null', "invalid nbf claim"),
        ('"iat":"now"', "invalid iat claim"),
        ('"iat":-5', "invalid iat claim"),
        ('"iat":1' + "0" * 400, "invalid iat claim"),
        ('"exp":NaN', "malformed token"),  # not JSON at all
        ('"x":Infinity', "malformed token"),
        ('"org":"victim","org":"acme"', "malformed token"),  # json keeps the last; other parsers the first
        ('"ctx":{"a":1,"a":2}', "malformed token"),  # duplicates anywhere, not only at the top
        ('"exp":' + "9" * 5000, "invalid token"),  # over Python's digit limit: PyJWT's own parse refuses
    ],
    ids=lambda value: value[:24] if isinstance(value, str) and value.startswith('"') else None,
)
def test_numeric_dates_must_be_sane_numbers_and_keys_unique(path: str, member: str, reason: str) -> None:
    token = sign_text(path, "{" + member + "," + base_text(path, omit=member.split('"')[1]) + "}")
    assert refusal(path, token) == reason


def test_fractional_and_boundary_numeric_dates_are_accepted(path: str) -> None:
    now = time.time()
    claims = PATHS[path][0]().verify(token_with(path, exp=now + 60.5, iat=now - 0.25, nbf=0))
    assert claims.expires_at == now + 60.5


def test_a_duplicate_header_key_makes_the_token_malformed(path: str) -> None:
    alg = PATHS[path][1]
    for header in (f'{{"alg":"{alg}","alg":"{alg}"}}', f'{{"typ":"JWT","alg":"{alg}","typ":"JWT"}}'):
        assert refusal(path, sign_text(path, "{" + base_text(path) + "}", header)) == "malformed token"


def test_the_signature_is_checked_before_the_claims(path: str) -> None:
    token = sign_text(path, '{"exp":"9999999999","name":"a\\r\\nb",' + base_text(path, omit="exp") + "}")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert refusal(path, forged) == "bad token signature"
    assert refusal(path, token) == "invalid exp claim"
