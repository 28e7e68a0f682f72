"""JWT verification with pinned algorithms and required claims.

Every refusal is an :class:`AuthError` whose ``reason`` is short, fixed text:
it never contains the token or any part of it, so it is safe to send as a
close reason and to log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hmac
import re
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
import jwt.utils
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from tornado_ws.config import SYMMETRIC_ALGORITHMS, Config, ConfigError
from tornado_ws.core.protocol import STRICT_JSON

#: Longest ``sub``/``org``/``name`` accepted; ids travel in every frame.
MAX_CLAIM_LENGTH = 256
#: What no claim the hub puts into a frame or a log line may hold: lone UTF-16 surrogates
#: (they decode from JSON but cannot be encoded as UTF-8, so every frame built from them
#: fails) and control characters: C0 (CR/LF/TAB/NUL...), DEL, C1 (NEL...) and the Unicode
#: line/paragraph separators, which forge log lines and split lines in most viewers.
#: Format characters (ZWJ inside emoji, bidi marks) stay allowed: display names use them.
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: NumericDate claims. Seconds since 1970 in [0, 1e11): 1e11 is the year 5138, past any real
#: expiry, and the bound keeps 10**400, 1e400 (inf) and NaN out of float() and comparisons.
MAX_NUMERIC_DATE = 1e11
_NUMBER = (int, float)
#: HMAC algorithms verified without PyJWT when the token is plain (see TokenVerifier._fast_payload).
_HMAC_HASHES = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
#: Header fields the fast path understands; anything else (crit, b64, ...) goes through PyJWT.
_PLAIN_HEADER = frozenset(("alg", "typ", "kid"))


class AuthError(Exception):
    """A token was refused. ``reason`` is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    """What the hub knows about a verified caller."""

    user_id: str
    org_id: str
    name: str | None = None
    roles: tuple[str, ...] = ()
    expires_at: float | None = None
    #: Session-id patterns this holder may join; None means any session of its org.
    sessions: tuple[str, ...] | None = None
    #: The whole verified payload (see :attr:`raw`); not in repr: it may hold what logs must not.
    _payload: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def raw(self) -> Mapping[str, Any]:
        """The token's whole verified payload, read-only: the application's own claims (a plan,
        project ids) for its hooks. Nested values are the decoded JSON; treat them as read-only."""
        return types.MappingProxyType(self._payload)


def load_public_key(pem: str) -> Any:
    """Parse a PEM public key once, so verification does not re-parse it."""
    try:
        return load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError("--jwt-public-key: the file is not a PEM public key") from exc


def algorithms_for_key(pem: str) -> tuple[str, ...]:
    """The algorithm a public key implies, used when none is pinned explicitly."""
    key = load_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("ES256",)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("EdDSA",)
    raise ConfigError("--jwt-public-key: unsupported key type (use RSA, EC or Ed25519)")


def safe_claim_text(value: str) -> bool:
    """True when ``value`` can go into a frame and a log line: no control character, no lone surrogate."""
    # isprintable() is False for a superset of what we refuse and costs a third of the regex, so
    # the regex runs only for the rare name holding a ZWJ, a no-break space or the like.
    return value.isprintable() or _UNSAFE_TEXT.search(value) is None


def _optional_str(payload: Mapping[str, Any], claim: str) -> str | None:
    value = payload.get(claim)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_CLAIM_LENGTH or not safe_claim_text(value):
        raise AuthError(f"invalid {claim} claim")
    return value


def _required_str(payload: Mapping[str, Any], claim: str) -> str:
    value = _optional_str(payload, claim)
    if not value:
        raise AuthError(f"token lacks claim {claim}")
    return value


def _str_list(payload: Mapping[str, Any], claim: str) -> tuple[str, ...] | None:
    value = payload.get(claim)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and safe_claim_text(v) for v in value):
        raise AuthError(f"invalid {claim} claim")
    return tuple(value)


def _time_refusal(payload: Mapping[str, Any], now: float, leeway: float) -> str | None:
    """Why the NumericDate claims refuse the token, or None; both verification paths ask this."""
    exp = payload.get("exp")
    if exp is None:
        return "token lacks claim exp"
    # Unrolled, and absent nbf/iat read as 0 (which passes): this runs on every handshake.
    nbf, iat = payload.get("nbf", 0), payload.get("iat", 0)
    # type(), not isinstance(): a JSON true is an int to isinstance. NaN fails the range too.
    if type(exp) not in _NUMBER or not 0 <= exp < MAX_NUMERIC_DATE:
        return "invalid exp claim"
    if type(nbf) not in _NUMBER or not 0 <= nbf < MAX_NUMERIC_DATE:
        return "invalid nbf claim"
    if type(iat) not in _NUMBER or not 0 <= iat < MAX_NUMERIC_DATE:
        return "invalid iat claim"
    if exp <= now - leeway:
        return "token expired"
    if nbf > now + leeway or iat > now + leeway:
        return "token not yet valid"
    return None


class TokenVerifier:
    """Verifies tokens against one key per pinned algorithm."""

    def __init__(
        self,
        keys: Mapping[str, Any],
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        if not keys:
            raise ConfigError("no JWT algorithm has a key")
        self._keys = dict(keys)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway
        # The fast path checks only what PyJWT checks with our options when no audience or
        # issuer is configured; with them, every token takes PyJWT's path.
        self._hmac_keys: dict[str, bytes] = {}
        self._header_algs: dict[str, str] = {}
        if audience is None and issuer is None:
            for alg, key in self._keys.items():
                if alg in _HMAC_HASHES and isinstance(key, str | bytes):
                    # PyJWT refuses secrets that look like PEM/SSH keys; then so does the fast path.
                    with contextlib.suppress(jwt.InvalidKeyError):
                        self._hmac_keys[alg] = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)

    @classmethod
    def from_config(cls, config: Config, demo_secret: str | None = None) -> TokenVerifier:
        """Build the verifier for ``config``; ``demo_secret`` adds HS256 for demo tokens."""
        keys: dict[str, Any] = {}
        public_key = load_public_key(config.jwt_public_key) if config.jwt_public_key else None
        secret = config.jwt_secret or demo_secret
        for alg in config.jwt_algorithms:
            if alg in SYMMETRIC_ALGORITHMS:
                if secret is not None:
                    keys[alg] = secret
            elif public_key is not None:
                keys[alg] = public_key
        if demo_secret is not None:
            keys.setdefault("HS256", secret)
        return cls(keys, audience=config.jwt_audience, issuer=config.jwt_issuer, leeway=config.jwt_leeway)

    @property
    def algorithms(self) -> Sequence[str]:
        return tuple(self._keys)

    def verify(self, token: str | None) -> Claims:
        """Return the claims of a valid token, or raise :class:`AuthError`."""
        if not token:
            raise AuthError("missing token")
        payload = self._fast_payload(token) if self._hmac_keys else None
        if payload is None:
            payload = self._decode(token)
        return Claims(
            user_id=_required_str(payload, "sub"),
            org_id=_required_str(payload, "org"),
            name=_optional_str(payload, "name"),
            roles=_str_list(payload, "roles") or (),
            expires_at=float(payload["exp"]),
            sessions=_str_list(payload, "sessions"),
            _payload=payload,
        )

    def _fast_payload(self, token: str) -> dict[str, Any] | None:
        """The payload of a plain, valid HMAC token, verified without PyJWT; else None.

        PyJWT costs ~70-120 µs per token, most of it generic set-up; this is ~10 µs, and
        handshakes are paid per connection. It accepts only what PyJWT would accept with
        our options (canonical base64url, a strict JSON object header of alg/typ/kid, the
        HMAC, a strict JSON object payload, exp present, exp/nbf/iat as :func:`_time_refusal`
        reads them, sub and jti strings if present). Anything else, valid or not, returns None
        and goes through :meth:`_decode`, which then also words the refusal.
        """
        parts = token.split(".")
        if len(parts) != 3:
            return None
        head, body, signature = parts
        alg = self._header_algs.get(head)
        try:
            if alg is None:
                alg = self._plain_hmac_alg(head)
                if alg is None:
                    return None
                if len(self._header_algs) < 64:  # issuers reuse a handful of headers: decode each once
                    self._header_algs[head] = alg
            signing_input = f"{head}.{body}".encode("ascii")
            expected = base64.urlsafe_b64encode(hmac.digest(self._hmac_keys[alg], signing_input, _HMAC_HASHES[alg]))
            # Comparing encoded forms also demands PyJWT's canonical, unpadded signature segment.
            if not hmac.compare_digest(expected.rstrip(b"="), signature.encode("ascii")):
                return None
            # The one parse of the payload, strict (duplicate keys, NaN); str skips encoding sniffing.
            payload = STRICT_JSON.decode(_b64url(body).decode("utf-8"))
        except (ValueError, RecursionError):  # JSON, base64, non-ASCII (UnicodeError is a ValueError)
            return None
        if not isinstance(payload, dict) or _time_refusal(payload, time.time(), self._leeway) is not None:
            return None
        for claim in ("sub", "jti"):
            if claim in payload and not isinstance(payload[claim], str):
                return None
        return payload

    def _plain_hmac_alg(self, head: str) -> str | None:
        """The algorithm of a header segment the fast path may take (see _fast_payload)."""
        header = STRICT_JSON.decode(_b64url(head).decode("utf-8"))
        if not isinstance(header, dict) or not header.keys() <= _PLAIN_HEADER:
            return None
        alg = header.get("alg")
        return alg if isinstance(alg, str) and alg in self._hmac_keys else None

    def _decode(self, token: str) -> dict[str, Any]:
        """Verify with PyJWT, mapping each refusal to a fixed reason.

        PyJWT reads JSON leniently (the last duplicate key wins) and NumericDates with int()
        (so "9999999999" passes and 10**400 reaches float()). We parse both segments again,
        strictly, and check the times with :func:`_time_refusal`, as the fast path does.
        """
        try:
            header = jwt.get_unverified_header(token)
            _strict_segment(token.split(".", 1)[0])
        except (jwt.PyJWTError, ValueError, RecursionError):
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._keys:
            raise AuthError("token algorithm not allowed")
        try:
            payload = jwt.decode(
                token,
                self._keys[alg],
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # Times are ours (_time_refusal): PyJWT's int() reading is what we refuse.
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise AuthError("wrong token audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong token issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks claim {exc.claim}") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad token signature") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        try:
            # The signature holds; now the payload PyJWT read leniently, read strictly.
            payload = _strict_segment(token.split(".", 2)[1])
        except (ValueError, RecursionError):
            raise AuthError("malformed token") from None
        reason = _time_refusal(payload, time.time(), self._leeway)
        if reason is not None:
            raise AuthError(reason)
        return payload


def _strict_segment(segment: str) -> dict[str, Any]:
    """A header or payload segment decoded as PyJWT decodes it, then parsed as strict JSON."""
    value = STRICT_JSON.decode(jwt.utils.base64url_decode(segment).decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _b64url(segment: str) -> bytes:
    """Decode canonical unpadded base64url, as JWT segments are; raise ValueError otherwise."""
    raw = segment.encode("ascii")
    try:
        decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != raw:
        raise ValueError("not canonical base64url")  # junk characters, or stray bits at the end
    return decoded


def issue_token(
    secret: str,
    *,
    user_id: str,
    org_id: str,
    name: str | None = None,
    roles: Sequence[str] = (),
    ttl: float = 3600.0,
) -> str:
    """Mint an HS256 token (the demo route and tests use it)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user_id, "org": org_id, "iat": now, "exp": now + int(ttl)}
    if name:
        payload["name"] = name
    if roles:
        payload["roles"] = list(roles)
    return jwt.encode(payload, secret, algorithm="HS256")
