"""Rate limits of signup and login (per account, per client IP), with real Redis buckets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import AppFactory
from tests.support.factories import PASSWORD, signup

SIGNUP, LOGIN = "/api/auth/signup", "/api/auth/login"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def _clear_of_window_edge(period_seconds: int, margin: float = 3.0) -> None:
    """Fixed-window limits reset on the boundary: start a sequence well inside one window."""
    left = period_seconds - time.time() % period_seconds
    if left < margin:
        await asyncio.sleep(left + 0.05)


async def test_no_rate_limit_when_rate_limits_are_off(client: httpx.AsyncClient) -> None:
    await signup(client, "free@x.com")
    for _ in range(12):  # above the default 10/minute per account
        bad = await client.post(LOGIN, json={"email": "free@x.com", "password": "wrong-password"})
        assert_problem(bad, 401, "INVALID_CREDENTIALS")


def _assert_rate_limited(response: httpx.Response, period_seconds: int) -> None:
    assert_problem(response, 429, "RATE_LIMITED")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= period_seconds


async def test_login_is_limited_per_account(make_app: AppFactory) -> None:
    client, _ = await make_app(rate_limits="on", rate_limit_login="3/minute")
    await signup(client, "rl@x.com")
    await signup(client, "other@x.com")
    await _clear_of_window_edge(60)
    for email in ("rl@x.com", "RL@x.com", " Rl@X.com"):
        bad = await client.post(LOGIN, json={"email": email, "password": "wrong-password"})
        assert_problem(bad, 401, "INVALID_CREDENTIALS")
    limited = await client.post(LOGIN, json={"email": "rl@x.com", "password": PASSWORD})
    _assert_rate_limited(limited, 60)
    # Another account from the same address is not affected.
    other = await client.post(LOGIN, json={"email": "other@x.com", "password": PASSWORD})
    assert other.status_code == 200, other.text


async def test_login_is_limited_per_ip(make_app: AppFactory) -> None:
    client, _ = await make_app(rate_limits="on", rate_limit_login_ip="3/minute")
    await signup(client, "ip@x.com")
    await _clear_of_window_edge(60)
    for n in range(3):
        bad = await client.post(LOGIN, json={"email": f"n{n}@x.com", "password": PASSWORD})
        assert_problem(bad, 401, "INVALID_CREDENTIALS")
    limited = await client.post(LOGIN, json={"email": "ip@x.com", "password": PASSWORD})
    _assert_rate_limited(limited, 60)
    # X-Forwarded-For from an untrusted peer does not open a new bucket.
    spoofed = await client.post(
        LOGIN,
        json={"email": "ip@x.com", "password": PASSWORD},
        headers={"x-forwarded-for": "203.0.113.7"},
    )
    _assert_rate_limited(spoofed, 60)


async def test_login_ip_behind_a_trusted_proxy_is_the_forwarded_one(
    make_app: AppFactory,
) -> None:
    client, _ = await make_app(
        rate_limits="on", rate_limit_login_ip="2/minute", trusted_proxies=["127.0.0.1"]
    )
    await signup(client, "tp@x.com")
    await _clear_of_window_edge(60)
    body = {"email": "tp@x.com", "password": PASSWORD}
    first = {"x-forwarded-for": "203.0.113.1"}
    for _ in range(2):
        assert (await client.post(LOGIN, json=body, headers=first)).status_code == 200
    _assert_rate_limited(await client.post(LOGIN, json=body, headers=first), 60)
    second = {"x-forwarded-for": "203.0.113.2"}
    assert (await client.post(LOGIN, json=body, headers=second)).status_code == 200


async def test_signup_is_limited_per_ip(make_app: AppFactory) -> None:
    client, _ = await make_app(rate_limits="on", rate_limit_signup_ip="2/minute")
    await _clear_of_window_edge(60)
    await signup(client, "s1@x.com")
    await signup(client, "s2@x.com")
    limited = await client.post(SIGNUP, json={"email": "s3@x.com", "password": PASSWORD})
    _assert_rate_limited(limited, 60)
    # The refused signup created nothing.
    login = await client.post(LOGIN, json={"email": "s3@x.com", "password": PASSWORD})
    assert_problem(login, 401, "INVALID_CREDENTIALS")
