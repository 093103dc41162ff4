"""The storm benchmark's server-side pieces on real stores: the reference and the check."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from app.container import Container
from app.store.keys import DropKeys
from loadtests.invariant import invariant_problems
from loadtests.reference.app import Reference
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup


def store_urls(container: Container) -> tuple[str, str]:
    """The test stores' URLs, as the suite's app was given them."""
    settings = container.settings
    assert settings.database_url is not None
    assert settings.redis_url is not None
    return settings.database_url, settings.redis_url


@pytest.fixture
async def reference(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Reference]:
    _, redis_url = store_urls(container)
    monkeypatch.setenv("JWT_ACCESS_SECRET", container.settings.access_secret)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RESERVATION_TTL_SECONDS", str(container.settings.reservation_ttl_seconds))
    server = Reference()
    await server.startup()
    yield server
    await server.redis.aclose()


async def test_reference_answers_like_the_product(
    client: httpx.AsyncClient, container: Container, reference: Reference
) -> None:
    drop = await create_drop(client, await admin_token(client, container), totalStock=1)
    path = f"/api/drops/{drop['id']}/reserve"
    first, second = await signup(client), await signup(client)
    transport = httpx.ASGITransport(app=reference)
    async with httpx.AsyncClient(transport=transport, base_url="http://ref") as ref:
        held = await ref.post(path, headers=auth(first["accessToken"]))
        refused = await ref.post(path, headers=auth(second["accessToken"]))
        unauthorized = await ref.post(path, headers=auth("not-a-token"))
    product_refusal = await client.post(path, headers=auth(second["accessToken"]))

    assert held.status_code == 201
    body = held.json()
    assert set(body) == {"id", "dropId", "status", "expiresAt", "createdAt"}
    assert body["id"].split(".")[:2] == [drop["id"], first["user"]["id"]]
    assert (body["dropId"], body["status"]) == (drop["id"], "ACTIVE")
    assert refused.status_code == product_refusal.status_code == 409
    assert refused.content == product_refusal.content  # the same problem+json, byte for byte
    assert refused.headers["content-type"] == "application/problem+json"
    assert unauthorized.json()["code"] == "UNAUTHORIZED"
    # the reference's hold is a real hold: the product lists it and the books balance
    mine = await client.get("/api/me/reservations", headers=auth(first["accessToken"]))
    assert [r["id"] for r in mine.json()] == [body["id"]]
    await assert_invariant(container, drop["id"])


async def test_invariant_problems_reports_drift_and_oversell(
    client: httpx.AsyncClient, container: Container
) -> None:
    database_url, redis_url = store_urls(container)
    admin = await admin_token(client, container)
    healthy = await create_drop(client, admin, totalStock=5)
    drifted = await create_drop(client, admin, totalStock=5)
    stock = {healthy["id"]: 5, drifted["id"]: 5}
    assert await invariant_problems(database_url, redis_url, stock, Counter()) == (
        2,
        [],
    )

    await container.redis.hincrby(DropKeys(drifted["id"]).drop, "avail", 1)  # a unit from nowhere
    checked, problems = await invariant_problems(
        database_url, redis_url, stock, Counter({healthy["id"]: 6})
    )
    assert checked == 2
    assert [p.split(" drop ")[0] for p in problems] == ["INVARIANT VIOLATED", "OVERSOLD"]
    assert drifted["id"] in problems[0]
    assert healthy["id"] in problems[1]
