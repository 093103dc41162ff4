"""login_check.lua and login_refund.lua: failures counted before the check, taken back
after a success, and the account's backstop open only to addresses that signed in."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from app.store import keys
from app.store.scripts import ScriptName, Scripts

WINDOW_MS = 60_000
KEEP_MS = 30 * 86_400_000


def _keys(address: str) -> list[str]:
    return keys.login_limits("owner@x.com", address, 7, 7)


async def _check(scripts: Scripts, address: str, pair: int = 2, account: int = 3) -> str:
    reply = await scripts.run(
        ScriptName.LOGIN_CHECK,
        _keys(address),
        [pair, WINDOW_MS, account, WINDOW_MS, address, int(time.time() * 1000) - KEEP_MS],
    )
    return str(reply[0])


async def _refund(scripts: Scripts, address: str, remember: bool, keep: int = 20) -> None:
    reply = await scripts.run(
        ScriptName.LOGIN_REFUND,
        _keys(address),
        [address if remember else "", int(time.time() * 1000), KEEP_MS, keep],
    )
    assert reply == ["OK"]


async def test_the_pair_limit_refuses_without_writing(redis: Redis, scripts: Scripts) -> None:
    pair, account, _ = _keys("10.0.0.1")
    assert [await _check(scripts, "10.0.0.1") for _ in range(3)] == ["ALLOWED"] * 2 + ["LIMITED"]
    assert (await redis.get(pair), await redis.get(account)) == ("2", "2")
    assert 0 < await redis.pttl(pair) <= WINDOW_MS
    assert await _check(scripts, "10.0.0.2") == "ALLOWED"  # another address: its own count


async def test_a_refund_takes_one_failure_back_and_never_goes_below_zero(
    redis: Redis, scripts: Scripts
) -> None:
    pair, account, known = _keys("10.0.0.1")
    assert await _check(scripts, "10.0.0.1") == "ALLOWED"
    await _refund(scripts, "10.0.0.1", remember=False)
    assert (await redis.get(pair), await redis.get(account)) == ("0", "0")
    await _refund(scripts, "10.0.0.1", remember=False)
    assert (await redis.get(pair), await redis.get(account)) == ("0", "0")
    assert not await redis.exists(known)


async def test_the_account_backstop_lets_known_addresses_through(
    redis: Redis, scripts: Scripts
) -> None:
    assert await _check(scripts, "10.0.0.9") == "ALLOWED"
    await _refund(scripts, "10.0.0.9", remember=True)  # the owner signed in from .9
    for n in range(3):
        assert await _check(scripts, f"10.0.1.{n}") == "ALLOWED"
    assert await _check(scripts, "10.0.2.1") == "LIMITED"
    assert await _check(scripts, "10.0.0.9") == "ALLOWED"
    _, account, known = _keys("10.0.0.9")
    assert await redis.get(account) == "4"
    assert 0 < await redis.pttl(known) <= KEEP_MS


async def test_only_the_most_recent_addresses_are_remembered(
    redis: Redis, scripts: Scripts
) -> None:
    for n in range(5):
        await _refund(scripts, f"10.0.3.{n}", remember=True, keep=3)
    known = _keys("any")[2]
    assert await redis.zcard(known) == 3
    assert await redis.zscore(known, "10.0.3.0") is None
