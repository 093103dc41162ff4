"""Refresh (rotation, reuse detection), logout, /me, and attacks on both kinds of token,
against the real stores."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import update

from app.container import Container
from app.db.models import RefreshToken
from tests.support.factories import PASSWORD, admin_token, auth, create_drop, signup

ME, REFRESH, LOGOUT, LOGIN = (
    "/api/auth/me",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/login",
)
OTHER_SECRET = "an-attacker-chosen-secret-of-enough-length-0123456789"


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def resign(token: str, secret: str, *, drop: str | None = None, **changes: Any) -> str:
    """The token's own claims, changed, signed again with HS256 and `secret`."""
    claims = claims_of(token)
    claims.update(changes)
    if drop is not None:
        del claims[drop]
    return jwt.encode(claims, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(token: str, alg: str) -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims_of(token)).encode())
    return f"{header}.{payload}."


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refreshToken": token})


async def me_status(client: httpx.AsyncClient, access: str) -> int:
    return (await client.get(ME, headers=auth(access))).status_code


# --- refresh ------------------------------------------------------------------


async def test_refresh_rotates_and_the_old_token_stops_working(client: httpx.AsyncClient) -> None:
    first = await signup(client)
    response = await refresh(client, first["refreshToken"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert set(second) == {"user", "accessToken", "refreshToken", "tokenType", "expiresIn"}
    assert second["user"] == first["user"]
    assert second["tokenType"] == "Bearer"
    assert second["expiresIn"] == 900
    assert second["refreshToken"] != first["refreshToken"]
    assert claims_of(second["refreshToken"])["sid"] == claims_of(first["refreshToken"])["sid"]
    me = await client.get(ME, headers=auth(second["accessToken"]))
    assert me.status_code == 200
    assert me.json() == first["user"]
    assert_problem(await refresh(client, first["refreshToken"]), 401, "INVALID_TOKEN")


async def test_reusing_a_rotated_token_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    s0 = await signup(client, "fam@x.com")
    s1 = (await refresh(client, s0["refreshToken"])).json()
    s2 = (await refresh(client, s1["refreshToken"])).json()
    other = (await client.post(LOGIN, json={"email": "fam@x.com", "password": PASSWORD})).json()
    assert await me_status(client, s2["accessToken"]) == 200

    assert_problem(await refresh(client, s0["refreshToken"]), 401, "INVALID_TOKEN")

    assert_problem(await refresh(client, s2["refreshToken"]), 401, "INVALID_TOKEN")
    for session in (s0, s1, s2):
        assert_problem(
            await client.get(ME, headers=auth(session["accessToken"])), 401, "UNAUTHORIZED"
        )
    # Another login of the same user is another family, untouched.
    assert await me_status(client, other["accessToken"]) == 200
    assert (await refresh(client, other["refreshToken"])).status_code == 200


async def test_concurrent_refreshes_of_one_token_never_both_succeed(
    client: httpx.AsyncClient,
) -> None:
    session = await signup(client)
    responses = await asyncio.gather(*(refresh(client, session["refreshToken"]) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401]
    winner = next(r.json() for r in responses if r.status_code == 200)
    # The losers presented a rotated token: the family is revoked, the winner's too.
    assert_problem(await refresh(client, winner["refreshToken"]), 401, "INVALID_TOKEN")


async def test_refresh_with_a_stored_row_that_has_expired_is_refused(
    client: httpx.AsyncClient, container: Container
) -> None:
    session = await signup(client)
    jti = claims_of(session["refreshToken"])["jti"]
    async with container.db.begin() as db:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await db.execute(update(RefreshToken).where(RefreshToken.id == jti).values(expires_at=past))
    assert_problem(await refresh(client, session["refreshToken"]), 401, "INVALID_TOKEN")


def _bad_refresh_tokens(session: dict[str, Any], container: Container) -> dict[str, str]:
    token, secret = session["refreshToken"], container.settings.refresh_secret
    now = int(time.time())
    return {
        "access token": session["accessToken"],
        "garbage": "garbage",
        "three garbage parts": "a.b.c",
        "another secret": resign(token, OTHER_SECRET),
        "the access secret": resign(token, container.settings.access_secret),
        "expired": resign(token, secret, iat=now - 7200, exp=now - 3600),
        "unknown jti": resign(token, secret, jti="0" * 32),
        "another user": resign(token, secret, sub="someone-else"),
        "typ access": resign(token, secret, typ="access"),
        "wrong iss": resign(token, secret, iss="evil"),
        "wrong aud": resign(token, secret, aud="other-api"),
        "no jti": resign(token, secret, drop="jti"),
        "alg none": unsigned(token, "none"),
    }


async def test_bad_refresh_tokens_are_invalid_token(
    client: httpx.AsyncClient, container: Container
) -> None:
    session = await signup(client)
    for name, bad in _bad_refresh_tokens(session, container).items():
        response = await refresh(client, bad)
        assert response.status_code == 401, (name, response.text)
        assert_problem(response, 401, "INVALID_TOKEN")
    # None of them disturbed the real one.
    assert (await refresh(client, session["refreshToken"])).status_code == 200


@pytest.mark.parametrize(
    "body", [{}, {"refreshToken": ""}, {"refreshToken": 5}, {"refreshToken": "x", "extra": 1}]
)
async def test_refresh_body_is_validated(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post(REFRESH, json=body), 422, "VALIDATION_ERROR")


# --- logout -------------------------------------------------------------------


async def test_logout_revokes_access_and_refresh_at_once(client: httpx.AsyncClient) -> None:
    session = await signup(client, "out@x.com")
    other = (await client.post(LOGIN, json={"email": "out@x.com", "password": PASSWORD})).json()
    response = await client.post(
        LOGOUT, json={"refreshToken": session["refreshToken"]}, headers=auth(session["accessToken"])
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await client.get(ME, headers=auth(session["accessToken"])), 401, "UNAUTHORIZED")
    assert_problem(await refresh(client, session["refreshToken"]), 401, "INVALID_TOKEN")
    again = await client.post(
        LOGOUT, json={"refreshToken": session["refreshToken"]}, headers=auth(session["accessToken"])
    )
    assert_problem(again, 401, "UNAUTHORIZED")
    # The user's other session is not signed out.
    assert await me_status(client, other["accessToken"]) == 200


async def test_logout_stops_reserves_at_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=5)
    session = await signup(client)
    reserve = f"/api/drops/{drop['id']}/reserve"
    held = await client.post(reserve, headers=auth(session["accessToken"]))
    assert held.status_code == 201
    out = await client.post(
        LOGOUT, json={"refreshToken": session["refreshToken"]}, headers=auth(session["accessToken"])
    )
    assert out.status_code == 204
    for extra in ({}, {"Idempotency-Key": "after-logout"}):  # both ways into the route
        refused = await client.post(reserve, headers=auth(session["accessToken"]) | extra)
        assert_problem(refused, 401, "UNAUTHORIZED")
        assert refused.json()["detail"] == "Session was signed out"
    view = await client.get(f"/api/drops/{drop['id']}")
    assert view.json()["availableStock"] == 4  # only the hold made before the logout


async def test_logout_without_bearer_is_401_and_revokes_nothing(client: httpx.AsyncClient) -> None:
    session = await signup(client)
    response = await client.post(LOGOUT, json={"refreshToken": session["refreshToken"]})
    assert_problem(response, 401, "UNAUTHORIZED")
    assert await me_status(client, session["accessToken"]) == 200
    assert (await refresh(client, session["refreshToken"])).status_code == 200


async def test_logout_with_another_users_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    attacker, victim = await signup(client), await signup(client)
    response = await client.post(
        LOGOUT, json={"refreshToken": victim["refreshToken"]}, headers=auth(attacker["accessToken"])
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await me_status(client, victim["accessToken"]) == 200
    assert (await refresh(client, victim["refreshToken"])).status_code == 200


async def test_logout_with_a_garbage_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    session = await signup(client)
    response = await client.post(
        LOGOUT, json={"refreshToken": "garbage"}, headers=auth(session["accessToken"])
    )
    assert response.status_code == 401, response.text
    assert await me_status(client, session["accessToken"]) == 200


# --- me and access-token attacks ----------------------------------------------


async def test_me_returns_the_user(client: httpx.AsyncClient, container: Container) -> None:
    session = await signup(client, "me@x.com", displayName="Me")
    response = await client.get(ME, headers=auth(session["accessToken"]))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": session["user"]["id"],
        "email": "me@x.com",
        "displayName": "Me",
        "role": "customer",
    }
    # A token minted here the way the server mints them is accepted: the attacks below
    # fail for the reason they name, not because the minting is off.
    same = resign(session["accessToken"], container.settings.access_secret)
    assert await me_status(client, same) == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
    ],
)
async def test_me_without_a_usable_header_is_401(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    assert_problem(await client.get(ME, headers=headers), 401, "UNAUTHORIZED")


def hs512(claims: dict[str, Any], secret: str) -> str:
    with warnings.catch_warnings():  # the test secret is short for HS512, on purpose here
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS512")


def _forged_access_tokens(session: dict[str, Any], container: Container) -> dict[str, str]:
    token, secret = session["accessToken"], container.settings.access_secret
    now = int(time.time())
    return {
        "expired": resign(token, secret, iat=now - 7200, exp=now - 60),
        "alg none": unsigned(token, "none"),
        "alg None": unsigned(token, "None"),
        "HS256 without signature": unsigned(token, "HS256"),
        "wrong secret": resign(token, OTHER_SECRET),
        "refresh secret": resign(token, container.settings.refresh_secret),
        "HS512": hs512(claims_of(token), secret),
        "wrong iss": resign(token, secret, iss="evil"),
        "wrong aud": resign(token, secret, aud="other-api"),
        "role superuser": resign(token, secret, role="superuser"),
        "typ refresh": resign(token, secret, typ="refresh"),
        "unknown user": resign(token, secret, sub="no-such-user"),
        "no sid": resign(token, secret, drop="sid"),
        "refresh token": session["refreshToken"],
    }


async def test_forged_access_tokens_are_401(
    client: httpx.AsyncClient, container: Container
) -> None:
    session = await signup(client)
    for name, forged in _forged_access_tokens(session, container).items():
        response = await client.get(ME, headers=auth(forged))
        assert response.status_code == 401, (name, response.text)
        assert_problem(response, 401, "UNAUTHORIZED")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "typ", "iss", "aud"])
async def test_access_token_missing_a_required_claim_is_401(
    client: httpx.AsyncClient, container: Container, claim: str
) -> None:
    session = await signup(client)
    forged = resign(session["accessToken"], container.settings.access_secret, drop=claim)
    assert_problem(await client.get(ME, headers=auth(forged)), 401, "UNAUTHORIZED")


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    session = await signup(client)
    sent = {"X-Request-ID": "trace-7"}
    responses = [
        await client.get(ME, headers=auth(session["accessToken"])),
        await client.get(ME),
        await client.post(REFRESH, json={"refreshToken": "garbage"}),
        await client.post(
            LOGOUT,
            json={"refreshToken": session["refreshToken"]},
            headers=auth(session["accessToken"]),
        ),
    ]
    assert [r.status_code for r in responses] == [200, 401, 401, 204]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)
    session = await signup(client)
    ok = await client.get(ME, headers={**sent, **auth(session["accessToken"])})
    refused = await client.get(ME, headers=sent)
    assert (ok.status_code, refused.status_code) == (200, 401)
    assert ok.headers["x-request-id"] == refused.headers["x-request-id"] == "trace-7"
