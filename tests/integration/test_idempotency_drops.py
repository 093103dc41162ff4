"""Idempotency-Key on the admin writes: create drop and restock."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.support.factories import admin_token, assert_invariant, auth, create_drop

BODY: dict[str, Any] = {"name": "Idem Runner", "priceCents": 9900, "totalStock": 4}


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def keyed(token: str, key: str | bytes) -> dict[str, Any]:
    return {**auth(token), "Idempotency-Key": key}


async def all_drops(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/api/drops", params={"status": "all"})
    assert response.status_code == 200, response.text
    drops: list[dict[str, Any]] = response.json()
    return drops


async def test_create_repeat_returns_the_first_answer(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    first = await client.post("/api/drops", json=BODY, headers=keyed(admin, "create-1"))
    assert first.status_code == 201, first.text
    again = await client.post("/api/drops", json=BODY, headers=keyed(admin, "create-1"))
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"].startswith("application/json")
    drops = await all_drops(client)
    assert [d["id"] for d in drops] == [first.json()["id"]]


async def test_without_a_key_each_create_is_new(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    for _ in range(2):
        response = await client.post("/api/drops", json=BODY, headers=auth(admin))
        assert response.status_code == 201, response.text
    assert len(await all_drops(client)) == 2


async def test_create_same_key_other_body_is_rejected(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    first = await client.post("/api/drops", json=BODY, headers=keyed(admin, "create-2"))
    assert first.status_code == 201, first.text
    other = await client.post(
        "/api/drops", json={**BODY, "totalStock": 5}, headers=keyed(admin, "create-2")
    )
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    drops = await all_drops(client)
    assert [(d["id"], d["totalStock"]) for d in drops] == [(first.json()["id"], 4)]


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "has space", "caf\u00e9".encode(), "tab\tkey", ""],
    ids=["256-chars", "space", "non-ascii", "tab", "empty"],
)
async def test_malformed_keys_are_422(
    client: httpx.AsyncClient, container: Container, key: str | bytes
) -> None:
    admin = await admin_token(client, container)
    response = await client.post("/api/drops", json=BODY, headers=keyed(admin, key))
    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await all_drops(client) == []


async def test_longest_printable_key_is_accepted(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    key = "".join(chr(c) for c in range(0x21, 0x7F)) * 3
    key = key[:255]
    first = await client.post("/api/drops", json=BODY, headers=keyed(admin, key))
    assert first.status_code == 201, first.text
    again = await client.post("/api/drops", json=BODY, headers=keyed(admin, key))
    assert (again.status_code, again.content) == (201, first.content)
    assert len(await all_drops(client)) == 1


async def test_same_key_two_admins_are_independent(
    client: httpx.AsyncClient, container: Container
) -> None:
    one, two = await admin_token(client, container), await admin_token(client, container)
    first = await client.post("/api/drops", json=BODY, headers=keyed(one, "shared"))
    second = await client.post("/api/drops", json=BODY, headers=keyed(two, "shared"))
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert len(await all_drops(client)) == 2


async def test_concurrent_duplicates_create_one_drop(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    responses = await asyncio.gather(
        *(client.post("/api/drops", json=BODY, headers=keyed(admin, "burst")) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [201] * 5
    assert len({r.content for r in responses}) == 1
    drops = await all_drops(client)
    assert [d["id"] for d in drops] == [responses[0].json()["id"]]


async def test_restock_repeat_applies_once(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=4)
    url = f"/api/drops/{drop['id']}/restock"
    first = await client.post(url, json={"quantity": 3}, headers=keyed(admin, "restock-1"))
    assert first.status_code == 200, first.text
    assert first.json()["totalStock"] == 7
    again = await client.post(url, json={"quantity": 3}, headers=keyed(admin, "restock-1"))
    assert (again.status_code, again.content) == (200, first.content)
    other = await client.post(url, json={"quantity": 4}, headers=keyed(admin, "restock-1"))
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    seen = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (seen["totalStock"], seen["availableStock"]) == (7, 7)
    await assert_invariant(container, drop["id"])


async def test_restock_key_is_scoped_to_the_path(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    a = await create_drop(client, admin, totalStock=1)
    b = await create_drop(client, admin, totalStock=1)
    for drop in (a, b):
        response = await client.post(
            f"/api/drops/{drop['id']}/restock", json={"quantity": 2}, headers=keyed(admin, "same")
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == drop["id"]
        assert response.json()["totalStock"] == 3
    await assert_invariant(container)


async def test_concurrent_restock_duplicates_apply_once(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=2)
    url = f"/api/drops/{drop['id']}/restock"
    responses = await asyncio.gather(
        *(client.post(url, json={"quantity": 5}, headers=keyed(admin, "r-burst")) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.content for r in responses}) == 1
    seen = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert seen["totalStock"] == 7
    await assert_invariant(container, drop["id"])


async def test_a_refused_write_is_remembered_too(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    cancelled = await client.patch(
        f"/api/drops/{drop['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert cancelled.status_code == 200
    url = f"/api/drops/{drop['id']}/restock"
    first = await client.post(url, json={"quantity": 1}, headers=keyed(admin, "refused"))
    assert_problem(first, 409, "INVALID_STATE")
    again = await client.post(url, json={"quantity": 1}, headers=keyed(admin, "refused"))
    assert (again.status_code, again.content) == (409, first.content)
    assert again.headers["content-type"].startswith("application/problem+json")
