"""The fast tier: logic whose Redis use is plain GET/SET/EXISTS, on fakeredis.

These stores and the idempotency flow above them depend on no Lua, no expiry event
and no fault, so an in-memory Redis is enough and the tests need no server. Anything
about scripts, expiry or faults runs on real servers (tests/integration, tests/faults).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from app.api.idempotency import idempotent
from app.errors import IdempotencyKeyReused, RateLimited, ValidationFailed
from app.store import keys
from app.store.idempotency import LEASE_MS, IdempotencyStore
from app.store.sessions import SessionStore
from app.store.workers import WorkerRegistry


@pytest.fixture
async def fake() -> AsyncIterator[Redis]:
    redis = FakeAsyncRedis(decode_responses=True)
    yield redis
    await redis.aclose()


def request(key: str | None, path: str = "/api/drops/x/reserve") -> Request:
    headers = [] if key is None else [(b"idempotency-key", key.encode())]
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "query_string": b"",
    }
    return Request(scope)


class Handler:
    """Counts its runs; answers `status` (with Retry-After when asked) or raises `error`."""

    def __init__(self, status: int = 201, retry_after: bool = False) -> None:
        self.runs = 0
        self.status = status
        self.retry_after = retry_after
        self.error: Exception | None = None

    async def __call__(self) -> Response:
        self.runs += 1
        if self.error is not None:
            raise self.error
        headers = {"Retry-After": "3"} if self.retry_after else None
        return Response(f"run {self.runs}", self.status, headers, media_type="application/json")


async def test_a_final_answer_is_kept_and_replayed(fake: Redis) -> None:
    store, handler = IdempotencyStore(fake), Handler()
    first = await idempotent(request("k1"), store, "u1", b"{}", handler)
    again = await idempotent(request("k1"), store, "u1", b"{}", handler)
    assert (first.status_code, first.body) == (201, b"run 1")
    assert (again.status_code, again.body) == (201, b"run 1")
    assert again.headers["idempotent-replayed"] == "true"
    assert handler.runs == 1
    # The scope is (user, method, path, key): another user or path runs on its own.
    await idempotent(request("k1"), store, "u2", b"{}", handler)
    await idempotent(request("k1", "/api/drops/y/reserve"), store, "u1", b"{}", handler)
    assert handler.runs == 3


@pytest.mark.parametrize(("status", "retry_after"), [(429, True), (409, True), (503, False)])
async def test_an_answer_that_asks_for_a_retry_is_not_kept(
    fake: Redis, status: int, retry_after: bool
) -> None:
    store, handler = IdempotencyStore(fake), Handler(status, retry_after)
    await idempotent(request("k"), store, "u", b"", handler)
    handler.status, handler.retry_after = 201, False
    second = await idempotent(request("k"), store, "u", b"", handler)
    assert (second.status_code, handler.runs) == (201, 2)
    assert "idempotent-replayed" not in second.headers


async def test_a_raised_refusal_is_kept_as_its_problem(fake: Redis) -> None:
    store, handler = IdempotencyStore(fake), Handler()
    handler.error = ValidationFailed("nope")
    first = await idempotent(request("k"), store, "u", b"", handler)
    second = await idempotent(request("k"), store, "u", b"", handler)
    assert first.status_code == second.status_code == 422
    assert (handler.runs, second.body) == (1, first.body)


async def test_a_raised_rate_limit_is_not_kept(fake: Redis) -> None:
    store, handler = IdempotencyStore(fake), Handler()
    handler.error = RateLimited(2)
    limited = await idempotent(request("k"), store, "u", b"", handler)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    handler.error = None
    assert (await idempotent(request("k"), store, "u", b"", handler)).status_code == 201


async def test_another_body_under_the_same_key_is_refused(fake: Redis) -> None:
    store, handler = IdempotencyStore(fake), Handler()
    await idempotent(request("k"), store, "u", b"{}", handler)
    with pytest.raises(IdempotencyKeyReused):
        await idempotent(request("k"), store, "u", b'{"x": 1}', handler)


async def test_a_malformed_key_is_refused_and_no_key_runs_plainly(fake: Redis) -> None:
    store, handler = IdempotencyStore(fake), Handler()
    with pytest.raises(ValidationFailed):
        await idempotent(request("bad key"), store, "u", b"", handler)
    await idempotent(request(None), store, "u", b"", handler)
    await idempotent(request(None), store, "u", b"", handler)
    assert handler.runs == 2
    assert await fake.dbsize() == 0


async def test_a_pending_claim_expires_so_a_dead_first_attempt_lets_go(fake: Redis) -> None:
    store = IdempotencyStore(fake)
    key = store.key("u", "digest")
    assert await store.claim(key, "fp")
    assert not await store.claim(key, "fp")
    assert 0 < await fake.pttl(key) <= LEASE_MS
    assert await store.read(key) == {"state": "pending", "fp": "fp"}


async def test_a_revoked_session_is_marked_for_an_access_token_lifetime(fake: Redis) -> None:
    sessions = SessionStore(fake, access_token_ttl_seconds=900)
    assert not await sessions.is_revoked("s1")
    await sessions.revoke("s1")
    assert await sessions.is_revoked("s1")
    assert not await sessions.is_revoked("s2")
    assert 890 <= await fake.ttl(sessions.revoked_key("s1")) <= 900
    assert sessions.revoked_key("s1") == keys.revoked_session("s1")


async def test_a_worker_address_is_registered_refreshed_and_removed(fake: Redis) -> None:
    registry = WorkerRegistry(fake)
    assert await registry.address_of("w1") is None
    await registry.register("w1", "10.0.0.1:4100", ttl_seconds=30)
    await fake.delete(keys.worker_address("w1"))  # a flush: the next refresh brings it back
    await registry.register("w1", "10.0.0.1:4100", ttl_seconds=30)
    assert await registry.address_of("w1") == "10.0.0.1:4100"
    assert 0 < await fake.ttl(keys.worker_address("w1")) <= 30
    await registry.deregister("w1")
    assert await registry.address_of("w1") is None
