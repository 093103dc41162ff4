"""Generic error handling: every error is problem+json, bounded, and reveals no internals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.support.factories import admin_token, auth, create_drop, signup

LIMIT = 16 * 1024
LEAKS = ("traceback", "sqlalchemy", "asyncpg", "redis", "psycopg")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers.get("x-request-id")
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == status
    assert body["code"] == code
    for field in ("type", "title", "detail", "code"):
        assert isinstance(body[field], str)
        assert body[field]
    lowered = response.text.lower()
    for leak in LEAKS:
        assert leak not in lowered, (leak, response.text)
    return body


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    for path in ("/api/nope", "/nope", "/api/drops/x/y/z", "/api/reservations"):
        assert_problem(await client.get(path), 404, "NOT_FOUND")


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/drops")
    assert_problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers.get("allow", "")
    assert_problem(await client.put("/api/drops/0123456789abcdef"), 405, "METHOD_NOT_ALLOWED")
    assert_problem(await client.get("/api/auth/login"), 405, "METHOD_NOT_ALLOWED")


async def test_declared_large_body_is_413(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)
    body = b'{"name": "' + b"x" * LIMIT + b'", "priceCents": 1, "totalStock": 1}'
    response = await client.post(
        "/api/drops",
        content=body,
        headers={**auth(admin), "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    listed = await client.get("/api/drops", params={"status": "all"})
    assert listed.json() == []


async def test_streamed_large_body_is_413(client: httpx.AsyncClient, container: Container) -> None:
    admin = await admin_token(client, container)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'", "priceCents": 1, "totalStock": 1}'

    response = await client.post(
        "/api/drops",
        content=chunks(),
        headers={**auth(admin), "Content-Type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    listed = await client.get("/api/drops", params={"status": "all"})
    assert listed.json() == []


async def test_body_at_the_limit_is_accepted(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    head, tail = b'{"name": "n", "brand": "', b'", "priceCents": 1, "totalStock": 1}'
    # brand is limited to 100 chars: pad with insignificant whitespace instead
    padding = LIMIT - len(head) - len(b"b") - len(tail)
    body = head + b"b" + tail[:-1] + b" " * padding + b"}"
    assert len(body) == LIMIT
    response = await client.post(
        "/api/drops", content=body, headers={**auth(admin), "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b'[{"name": "x"}]',
        b'"text"',
        b"null",
        b"42",
        b'{"name": "x",}',
        b'{"name": "\xff"}',  # not UTF-8
    ],
)
async def test_unparseable_or_non_object_bodies_are_422(
    client: httpx.AsyncClient, container: Container, raw: bytes
) -> None:
    admin = await admin_token(client, container)
    response = await client.post(
        "/api/drops", content=raw, headers={**auth(admin), "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_invalid_json_on_restock_and_signup_is_422(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin)
    headers = {**auth(admin), "Content-Type": "application/json"}
    restock = await client.post(f"/api/drops/{drop['id']}/restock", content=b"{", headers=headers)
    assert_problem(restock, 422, "VALIDATION_ERROR")
    listed = await client.post(
        "/api/auth/signup", content=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert_problem(listed, 422, "VALIDATION_ERROR")


async def test_request_id_is_echoed_on_errors_and_successes(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/drops/0123456789abcdef", headers={"X-Request-ID": "req-42"})
    assert_problem(missing, 404, "DROP_NOT_FOUND")
    assert missing.headers["x-request-id"] == "req-42"
    ok = await client.get("/api/drops", headers={"X-Request-ID": "req-43"})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == "req-43"
    generated = await client.get("/api/nope")
    assert_problem(generated, 404, "NOT_FOUND")
    other = await client.get("/api/nope")
    assert generated.headers["x-request-id"] != other.headers["x-request-id"]


async def test_common_errors_share_the_problem_shape(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    user = await signup(client)
    drop = await create_drop(client, admin, totalStock=1)
    assert_problem(await client.get("/api/auth/me"), 401, "UNAUTHORIZED")
    assert_problem(
        await client.get("/api/auth/me", headers={"Authorization": "Basic abc"}),
        401,
        "UNAUTHORIZED",
    )
    customer = auth(user["accessToken"])
    assert_problem(
        await client.post("/api/drops", json={"name": "x"}, headers=customer), 403, "FORBIDDEN"
    )
    assert_problem(
        await client.post("/api/drops", json={"name": "x"}, headers=auth(admin)),
        422,
        "VALIDATION_ERROR",
    )
    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=customer)
    assert held.status_code == 201, held.text
    other = await signup(client)
    assert_problem(
        await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(other["accessToken"])),
        409,
        "SOLD_OUT",
    )
    assert_problem(
        await client.post("/api/reservations/nope/purchase", headers=customer),
        404,
        "RESERVATION_NOT_FOUND",
    )


async def test_validation_problem_names_the_field(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    response = await client.post(
        "/api/drops", json={"name": "x", "priceCents": 1, "totalStock": -5}, headers=auth(admin)
    )
    body = assert_problem(response, 422, "VALIDATION_ERROR")
    assert "totalStock" in body["detail"]
