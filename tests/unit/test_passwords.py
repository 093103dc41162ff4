"""PasswordHasher: bcrypt off the event loop, no truncation, constant work for unknown users."""

from __future__ import annotations

import asyncio
from typing import Any

import bcrypt
import pytest

from app.services.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES, PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4)


def test_limits_match_the_contract() -> None:
    assert (MIN_PASSWORD_BYTES, MAX_PASSWORD_BYTES) == (8, 72)


async def test_hash_then_verify(hasher: PasswordHasher) -> None:
    digest = await hasher.hash("correct-horse")
    assert digest.startswith("$2b$04$")
    assert await hasher.verify("correct-horse", digest) is True
    assert await hasher.verify("correct-hors", digest) is False
    assert await hasher.verify("Correct-horse", digest) is False


async def test_each_hash_has_its_own_salt(hasher: PasswordHasher) -> None:
    first, second = await hasher.hash("same-password"), await hasher.hash("same-password")
    assert first != second
    assert await hasher.verify("same-password", first)
    assert await hasher.verify("same-password", second)


@pytest.mark.parametrize("password", ["€" * 24, "😀" * 18, "é" * 36, "a" * 72])
async def test_multibyte_passwords_up_to_72_bytes(hasher: PasswordHasher, password: str) -> None:
    assert len(password.encode()) == 72
    digest = await hasher.hash(password)
    assert await hasher.verify(password, digest)
    assert not await hasher.verify(password[:-1], digest)


async def test_a_longer_password_never_matches_its_72_byte_prefix(hasher: PasswordHasher) -> None:
    """bcrypt reads 72 bytes; a longer password must not log in on its prefix's hash."""
    prefix = "a" * 72
    digest = await hasher.hash(prefix)
    for longer in (prefix + "b", prefix + "€", prefix + "x" * 500):
        assert await hasher.verify(longer, digest) is False


async def test_a_longer_password_is_refused_not_truncated_when_hashing(
    hasher: PasswordHasher,
) -> None:
    with pytest.raises(ValueError, match="72"):
        await hasher.hash("a" * 73)


async def test_unknown_account_is_false_and_still_costs_a_check(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, bytes]] = []
    original = hasher._run

    async def counting(work: Any, first: bytes, second: bytes) -> Any:
        calls.append((work, second))
        return await original(work, first, second)

    digest = await hasher.hash("x" * 72)
    monkeypatch.setattr(hasher, "_run", counting)
    assert await hasher.verify("whatever-password", None) is False
    assert await hasher.verify("x" * 200, None) is False
    assert await hasher.verify("x" * 200, digest) is False
    assert [work for work, _ in calls] == [bcrypt.checkpw] * 3
    # one bcrypt check per attempt, whatever the input


async def test_the_dummy_password_does_not_log_in_an_unknown_account(
    hasher: PasswordHasher,
) -> None:
    assert await hasher.verify("sneakerdrop-dummy-password", None) is False
    assert await hasher.verify("unusable", None) is False


async def test_hashing_runs_off_the_event_loop() -> None:
    """At cost 10 a hash takes tens of ms: run on the loop, the task would be done
    after a single pass of the loop; in a hash process it is still running."""
    slow = PasswordHasher(rounds=10)
    task = asyncio.create_task(slow.hash("correct-horse"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()
    assert (await task).startswith("$2b$10$")
    verify = asyncio.create_task(slow.verify("correct-horse", None))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not verify.done()
    assert await verify is False
