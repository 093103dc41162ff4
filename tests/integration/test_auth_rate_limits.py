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


# --- the contract's three login limits (per address, per account and address, per account)


def _from(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


async def _login(
    client: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    return await client.post(
        LOGIN, json={"email": email, "password": password}, headers=_from(address)
    )


async def test_a_strangers_guesses_from_one_address_never_lock_the_owner_out(
    make_app: AppFactory,
) -> None:
    """Ten wrong passwords from A refuse A; the owner (an admin here) signs in from B."""
    client, container = await make_app(rate_limits="on", trusted_proxies=["127.0.0.1"])
    await container.auth_service.ensure_admin("owner@x.com", PASSWORD)
    await _clear_of_window_edge(60, margin=10)
    for _ in range(10):  # RATE_LIMIT_LOGIN's default: 10 failures a minute
        assert_problem(
            await _login(client, "owner@x.com", "guess", "198.51.100.7"), 401, "INVALID_CREDENTIALS"
        )
    _assert_rate_limited(await _login(client, "owner@x.com", PASSWORD, "198.51.100.7"), 60)
    owner = await _login(client, "owner@x.com", PASSWORD, "203.0.113.20")
    assert owner.status_code == 200, owner.text
    assert owner.json()["user"]["role"] == "admin"
    # B's own typos are B's: counted apart from A's.
    assert_problem(
        await _login(client, "owner@x.com", "typo", "203.0.113.20"), 401, "INVALID_CREDENTIALS"
    )


async def test_without_trusted_proxies_x_forwarded_for_is_one_address(
    make_app: AppFactory,
) -> None:
    """Not behind a trusted proxy, every X-Forwarded-For is the same peer: one bucket."""
    client, _ = await make_app(rate_limits="on")
    await signup(client, "solo@x.com")
    await _clear_of_window_edge(60, margin=10)
    for n in range(10):
        bad = await _login(client, "solo@x.com", "guess", f"198.51.100.{n}")
        assert_problem(bad, 401, "INVALID_CREDENTIALS")
    _assert_rate_limited(await _login(client, "solo@x.com", PASSWORD, "203.0.113.20"), 60)


async def test_only_failures_count_against_the_account(make_app: AppFactory) -> None:
    client, _ = await make_app(
        rate_limits="on", rate_limit_login="3/minute", trusted_proxies=["127.0.0.1"]
    )
    await signup(client, "typo@x.com")
    await _clear_of_window_edge(60, margin=10)
    address = "198.51.100.9"
    for _ in range(2):
        assert_problem(
            await _login(client, "typo@x.com", "typo", address), 401, "INVALID_CREDENTIALS"
        )
    for _ in range(5):  # successes are not failures: the count stays at two
        assert (await _login(client, "typo@x.com", PASSWORD, address)).status_code == 200
    assert_problem(await _login(client, "typo@x.com", "typo", address), 401, "INVALID_CREDENTIALS")
    _assert_rate_limited(await _login(client, "typo@x.com", PASSWORD, address), 60)


async def test_guesses_from_many_addresses_trip_the_account_backstop(
    make_app: AppFactory,
) -> None:
    """120 wrong passwords, 40 at a time, from 60 addresses: exactly 100 (RATE_LIMIT_LOGIN_ACCOUNT)
    are checked, even though all were in flight together. Then a fresh address is refused,
    the owner's too; the address the owner signed in from before still gets in."""
    client, _ = await make_app(rate_limits="on", trusted_proxies=["127.0.0.1"])
    await signup(client, "target@x.com")
    home = "203.0.113.50"
    assert (await _login(client, "target@x.com", PASSWORD, home)).status_code == 200
    await _clear_of_window_edge(60, margin=20)
    in_flight = asyncio.Semaphore(40)  # well below the hash queue's bound

    async def guess(n: int) -> httpx.Response:
        async with in_flight:
            return await _login(client, "target@x.com", f"guess-{n}", f"198.51.100.{n // 2}")

    guesses = await asyncio.gather(*(guess(n) for n in range(120)))
    statuses = sorted(response.status_code for response in guesses)
    assert statuses == [401] * 100 + [429] * 20
    stranger = await _login(client, "target@x.com", "guess", "192.0.2.1")
    _assert_rate_limited(stranger, 60)
    new_place = await _login(client, "target@x.com", PASSWORD, "192.0.2.2")
    _assert_rate_limited(new_place, 60)  # a never-seen address waits out the window
    at_home = await _login(client, "target@x.com", PASSWORD, home)
    assert at_home.status_code == 200, at_home.text
    assert_problem(
        await _login(client, "other@x.com", "guess", "192.0.2.1"), 401, "INVALID_CREDENTIALS"
    )


async def test_every_login_limit_answers_the_same_429(make_app: AppFactory) -> None:
    client, _ = await make_app(
        rate_limits="on",
        rate_limit_login_ip="4/minute",
        rate_limit_login="2/minute",
        rate_limit_login_account="3/minute",
        trusted_proxies=["127.0.0.1"],
    )
    await signup(client, "pair@x.com")
    await signup(client, "spread@x.com")
    await _clear_of_window_edge(60, margin=10)
    # This account from this address (2 failures).
    for _ in range(2):
        await _login(client, "pair@x.com", "guess", "198.51.100.1")
    by_pair = await _login(client, "pair@x.com", PASSWORD, "198.51.100.1")
    # This account from every address (3 failures from 3 addresses).
    for n in range(3):
        await _login(client, "spread@x.com", "guess", f"198.51.100.{10 + n}")
    by_account = await _login(client, "spread@x.com", PASSWORD, "198.51.100.20")
    # Attempts from one address (4, on 4 accounts).
    for n in range(4):
        await _login(client, f"nobody{n}@x.com", "guess", "198.51.100.30")
    by_address = await _login(client, "spread@x.com", PASSWORD, "198.51.100.30")
    answers = [by_pair, by_account, by_address]
    for answer in answers:
        _assert_rate_limited(answer, 60)
    assert by_pair.json() == by_account.json() == by_address.json()
    retry_after = {int(answer.headers["retry-after"]) for answer in answers}
    assert max(retry_after) - min(retry_after) <= 1, retry_after  # a second may have passed
