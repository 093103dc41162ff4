"""TokenService on its own: what it issues, and everything it must refuse."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from app.config import Settings
from app.errors import InvalidToken, Unauthorized
from app.services.tokens import AUDIENCE, ISSUER, TokenService, token_digest

# 64 bytes and more, so pyjwt does not warn even for HS512.
ACCESS = "unit-access-secret-" + "a" * 48
REFRESH = "unit-refresh-secret-" + "b" * 48
OTHER = "unit-other-secret-" + "c" * 48


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> TokenService:
    for name in ("ENV", "JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "ACCESS_TOKEN_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        _env_file=None,
        env="test",
        jwt_access_secret=ACCESS,
        jwt_refresh_secret=REFRESH,
        access_token_ttl_seconds=600,
        refresh_token_ttl_seconds=7200,
    )
    return TokenService(settings)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "u1",
        "role": "customer",
        "name": "Ada",
        "sid": "s1",
        "typ": "access",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return claims


def _sign(claims: dict[str, Any], secret: str = ACCESS) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_access_token_round_trip(tokens: TokenService) -> None:
    token = tokens.issue_access("u1", "admin", "s1", "Ada")
    claims = tokens.decode_access(token)
    assert (claims.user_id, claims.role, claims.session_id, claims.display_name) == (
        "u1",
        "admin",
        "s1",
        "Ada",
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["typ"] == "access"
    assert payload["iss"] == ISSUER
    assert payload["aud"] == AUDIENCE
    assert payload["exp"] - payload["iat"] == 600
    assert abs(payload["iat"] - time.time()) < 5


def test_refresh_token_round_trip(tokens: TokenService) -> None:
    token, token_id = tokens.issue_refresh("u1", "s1")
    other, other_id = tokens.issue_refresh("u1", "s1")
    assert token != other
    assert token_id != other_id
    claims = tokens.decode_refresh(token)
    assert (claims.user_id, claims.session_id, claims.token_id) == ("u1", "s1", token_id)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["typ"] == "refresh"
    assert payload["exp"] - payload["iat"] == 7200


def test_the_two_kinds_are_not_interchangeable(tokens: TokenService) -> None:
    access = tokens.issue_access("u1", "customer", "s1", "Ada")
    refresh, _ = tokens.issue_refresh("u1", "s1")
    with pytest.raises(InvalidToken):
        tokens.decode_refresh(access)
    with pytest.raises(Unauthorized) as refused:
        tokens.decode_access(refresh)
    assert refused.type is Unauthorized  # code UNAUTHORIZED, not INVALID_TOKEN
    # Even with the kind's own secret, the typ claim decides.
    with pytest.raises(Unauthorized):
        tokens.decode_access(_sign(_claims(typ="refresh")))


def test_a_service_with_other_secrets_refuses_the_tokens(
    tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENV", raising=False)
    other = TokenService(
        Settings(
            _env_file=None, env="test", jwt_access_secret=OTHER, jwt_refresh_secret=OTHER + "x"
        )
    )
    with pytest.raises(Unauthorized):
        other.decode_access(tokens.issue_access("u1", "customer", "s1", "Ada"))
    with pytest.raises(InvalidToken):
        other.decode_refresh(tokens.issue_refresh("u1", "s1")[0])


def test_a_hand_minted_valid_access_token_passes(tokens: TokenService) -> None:
    """The baseline the refusals below change one thing of."""
    assert tokens.decode_access(_sign(_claims())).user_id == "u1"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "typ", "iss", "aud", "sid", "role"])
def test_access_token_missing_a_claim_is_refused(tokens: TokenService, claim: str) -> None:
    claims = _claims()
    del claims[claim]
    with pytest.raises(Unauthorized):
        tokens.decode_access(_sign(claims))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 1},
        {"nbf": int(time.time()) + 3600},
        {"iss": "evil"},
        {"aud": "other"},
        {"role": "superuser"},
        {"role": None},
        {"sub": 42},
        {"sid": 7},
        {"typ": "ACCESS"},
        {"exp": "tomorrow"},
        {"iat": "now"},
    ],
    ids=repr,
)
def test_access_token_with_a_bad_claim_is_refused(
    tokens: TokenService, changes: dict[str, Any]
) -> None:
    with pytest.raises(Unauthorized):
        tokens.decode_access(_sign(_claims(**changes)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256"])
def test_unsigned_tokens_are_refused(tokens: TokenService, alg: str) -> None:
    token = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(Unauthorized):
        tokens.decode_access(token)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_refused(tokens: TokenService, alg: str) -> None:
    with pytest.raises(Unauthorized):
        tokens.decode_access(jwt.encode(_claims(), ACCESS, algorithm=alg))


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "é.é.é", "\ud800", "x" * 5000, ".", ".."], ids=repr
)
def test_garbage_is_refused_with_the_domain_error(tokens: TokenService, token: str) -> None:
    with pytest.raises(Unauthorized):
        tokens.decode_access(token)
    with pytest.raises(InvalidToken):
        tokens.decode_refresh(token)


@pytest.mark.parametrize("jti", [None, 5, ["a"]], ids=repr)
def test_refresh_token_needs_a_string_jti(tokens: TokenService, jti: Any) -> None:
    claims = _claims(typ="refresh")
    claims.pop("role")
    if jti is not None:
        claims["jti"] = jti
    with pytest.raises(InvalidToken):
        tokens.decode_refresh(_sign(claims, REFRESH))


def test_expired_refresh_token_is_refused(tokens: TokenService) -> None:
    now = int(time.time())
    claims = _claims(typ="refresh", jti="j1", iat=now - 100, exp=now - 1)
    with pytest.raises(InvalidToken):
        tokens.decode_refresh(_sign(claims, REFRESH))
    valid = _claims(typ="refresh", jti="j1")
    assert tokens.decode_refresh(_sign(valid, REFRESH)).token_id == "j1"


def test_token_digest_is_sha256_hex() -> None:
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert token_digest("abc") != token_digest("abd")


def test_error_codes() -> None:
    assert (Unauthorized.status, Unauthorized.code) == (401, "UNAUTHORIZED")
    assert (InvalidToken.status, InvalidToken.code) == (401, "INVALID_TOKEN")


def test_a_verified_token_is_checked_again_once_expired(
    tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tokens.issue_access("u1", "customer", "s1", "Ann")
    verified: list[str] = []
    real_decode = tokens._decode

    def counting_decode(*args: Any) -> dict[str, Any] | None:
        verified.append(args[0])
        return real_decode(*args)

    monkeypatch.setattr(tokens, "_decode", counting_decode)
    assert tokens.decode_access(token).user_id == "u1"
    assert tokens.decode_access(token).user_id == "u1"
    assert len(verified) == 1  # the second use was not verified again
    later = time.time() + 601  # past exp: the cache no longer answers, the full check runs
    monkeypatch.setattr("app.services.tokens.time.time", lambda: later)
    tokens.decode_access(token)  # (pyjwt reads the real clock, by which it is still valid)
    assert len(verified) == 2


def test_a_remembered_token_does_not_vouch_for_an_altered_one(tokens: TokenService) -> None:
    token = tokens.issue_access("u1", "customer", "s1", "Ann")
    tokens.decode_access(token)
    header, payload, signature = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["role"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for altered in (f"{header}.{forged_payload}.{signature}", token + "x", token[:-2]):
        with pytest.raises(Unauthorized):
            tokens.decode_access(altered)
    assert tokens.decode_access(token).role == "customer"
