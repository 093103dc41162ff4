"""Auth abuse on a real `sneakerdrop serve`: 100 wrong passwords for one account from 50
forwarded addresses (X-Forwarded-For), without TRUSTED_PROXIES and with it.

`serve` gives TRUSTED_PROXIES to uvicorn's proxy-header handling as well as to the app
(app/cli.py, app/api/deps.py `client_ip`), so only a real serve shows what the two make
of the header together. The login limits (app/services/ratelimit.py, lua/login_check.lua):
attempts per client address (RATE_LIMIT_LOGIN_IP, 100), failures per account and address
(RATE_LIMIT_LOGIN, 10) and failures per account from every address
(RATE_LIMIT_LOGIN_ACCOUNT, 60 here so that it fires inside the storm). A failure is
counted before bcrypt runs, so the counts are exact however the 100 attempts interleave
over both workers. The counts are the defaults' (but the account's); the window is an
hour rather than the defaults' minute: the storm must fall inside one fixed window, and
waiting out a minute's last 25 s cost up to 25 s (5 s on average), an hour's almost never.

- Without TRUSTED_PROXIES the header is ignored: every attempt is the peer's, 127.0.0.1,
  so exactly 10 guesses reach bcrypt (401) and 90 are refused (429); the 101st attempt
  from that peer meets RATE_LIMIT_LOGIN_IP too. The owner on another real address
  (127.0.0.2) signs in: guesses lock out only the address they came from.
- With TRUSTED_PROXIES=127.0.0.1 each forwarded address is a client of its own: its 2
  guesses stay under both per-address limits, and the account's backstop lets exactly
  60 through. Then a never-seen address is refused even with the right password (so is
  an untrusted peer claiming the owner's address), and the address the owner signed in
  from before the storm gets in (docs/RELIABILITY.md, "Abuse").
- Every 429, whichever of the three limits fired, is the same answer: the same body byte
  for byte and the same headers, but for the date, the request id and Retry-After (which
  runs to the end of the longest window, whichever limit fired).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.factories import PASSWORD
from tests.support.serve import running_serve
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(120)

WINDOW_SECONDS = 3600
LIMITS = {
    "RATE_LIMITS": "on",
    "RATE_LIMIT_LOGIN_IP": "100/hour",
    "RATE_LIMIT_LOGIN": "10/hour",
    "RATE_LIMIT_LOGIN_ACCOUNT": "60/hour",
}
PER_ADDRESS_FAILURES, ACCOUNT_FAILURES = 10, 60
GUESSES = 100
FORWARDED = [f"198.51.100.{n}" for n in range(1, 51)]  # 2 guesses each
HOME, FRESH = "203.0.113.50", "192.0.2.1"
OTHER_PEER = "127.0.0.2"  # loopback: a second real client address on this host
VARYING_HEADERS = {"date", "x-request-id", "retry-after"}


async def _login(
    http: httpx.AsyncClient, email: str, password: str, forwarded: str | None = None
) -> httpx.Response:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return await http.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def _storm(url: str, email: str) -> list[httpx.Response]:
    """GUESSES wrong passwords, 20 in flight over as many connections (both workers)."""
    in_flight = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def guess(n: int) -> httpx.Response:
            async with in_flight:
                return await _login(http, email, f"guess-{n}", FORWARDED[n % len(FORWARDED)])

        return list(await asyncio.gather(*(guess(n) for n in range(GUESSES))))


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    found: dict[int, int] = {}
    for response in responses:
        found[response.status_code] = found.get(response.status_code, 0) + 1
    return found


def _from_other_peer(url: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=OTHER_PEER)
    return httpx.AsyncClient(base_url=url, timeout=10, transport=transport)


async def test_login_storm_from_forwarded_addresses_with_and_without_trusted_proxies(
    stores: StoreUrls, tmp_path: Path
) -> None:
    ignoring, trusting = "ignoring@example.com", "trusting@example.com"
    (tmp_path / "ignoring").mkdir()
    (tmp_path / "trusting").mkdir()
    async with AsyncExitStack() as servers:
        # Two deployments on the same stores; each attacks its own admin account.
        ignoring_url, trusting_url = await asyncio.gather(
            servers.enter_async_context(
                running_serve(stores, tmp_path / "ignoring", ignoring, TRUSTED_PROXIES="", **LIMITS)
            ),
            servers.enter_async_context(
                running_serve(
                    stores, tmp_path / "trusting", trusting, TRUSTED_PROXIES="127.0.0.1", **LIMITS
                )
            ),
        )
        async with (
            httpx.AsyncClient(base_url=ignoring_url, timeout=10) as ignoring_http,
            httpx.AsyncClient(base_url=trusting_url, timeout=10) as trusting_http,
            _from_other_peer(ignoring_url) as ignoring_other_peer,
            _from_other_peer(trusting_url) as trusting_other_peer,
        ):
            left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS  # one fixed window for all
            if left < 25:
                await asyncio.sleep(left + 0.1)

            # The owner signs in from home before the attack (its address becomes known).
            home = await _login(trusting_http, trusting, PASSWORD, HOME)
            assert home.status_code == 200, home.text

            # Without TRUSTED_PROXIES: one client, 127.0.0.1, whatever the header says.
            ignored = await _storm(ignoring_url, ignoring)
            assert _statuses(ignored) == {
                401: PER_ADDRESS_FAILURES,
                429: GUESSES - PER_ADDRESS_FAILURES,
            }
            same_peer = await _login(ignoring_http, ignoring, PASSWORD, FRESH)  # 101st attempt
            assert same_peer.status_code == 429, same_peer.text
            elsewhere = await _login(ignoring_other_peer, ignoring, PASSWORD, FRESH)
            assert elsewhere.status_code == 200, elsewhere.text

            # With TRUSTED_PROXIES: 50 clients, capped together by the account's backstop.
            honoured = await _storm(trusting_url, trusting)
            assert _statuses(honoured) == {401: ACCOUNT_FAILURES, 429: GUESSES - ACCOUNT_FAILURES}
            fresh = await _login(trusting_http, trusting, PASSWORD, FRESH)
            assert fresh.status_code == 429, fresh.text
            claimed_home = await _login(trusting_other_peer, trusting, PASSWORD, HOME)
            assert claimed_home.status_code == 429, claimed_home.text  # not a trusted proxy
            at_home = await _login(trusting_http, trusting, PASSWORD, HOME)
            assert at_home.status_code == 200, at_home.text
            assert at_home.json()["user"]["email"] == trusting

    for refused in ignored + honoured:
        if refused.status_code == 401:
            assert refused.json()["code"] == "INVALID_CREDENTIALS"
    refusals = [
        r for r in [*ignored, same_peer, *honoured, fresh, claimed_home] if r.status_code == 429
    ]
    assert len(refusals) == 90 + 1 + 40 + 2
    assert refusals[0].json()["code"] == "RATE_LIMITED"
    assert {r.content for r in refusals} == {refusals[0].content}  # pair, address, account
    headers = {
        tuple(sorted((k, v) for k, v in r.headers.items() if k not in VARYING_HEADERS))
        for r in refusals
    }
    assert len(headers) == 1, headers
    assert all(1 <= int(r.headers["retry-after"]) <= WINDOW_SECONDS for r in refusals)
