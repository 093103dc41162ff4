"""Security headers on every kind of response: success, error, auth."""

from __future__ import annotations

import httpx
import pytest

from tests.support.factories import PASSWORD

EVERY_RESPONSE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/healthz", None),
        ("GET", "/api/drops", None),
        ("GET", "/api/drops/0000000000000000", None),  # 404 problem
        ("POST", "/api/drops", {"name": "x"}),  # 401 problem
    ],
)
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await client.request(method, path, json=body)
    for name, value in EVERY_RESPONSE.items():
        assert response.headers.get(name) == value, (path, name)
    assert "no-store" not in response.headers.get("cache-control", "")


async def test_the_page_keeps_the_headers_under_its_own_csp(client: httpx.AsyncClient) -> None:
    """The page brings a fuller policy (tests/integration/test_page_assets.py), which
    replaces the default one and still forbids framing."""
    response = await client.get("/")
    for name, value in EVERY_RESPONSE.items():
        if name != "content-security-policy":
            assert response.headers.get(name) == value, name
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_auth_responses_are_never_cached(client: httpx.AsyncClient) -> None:
    ok = await client.post(
        "/api/auth/signup", json={"email": "headers@example.com", "password": PASSWORD}
    )
    failed = await client.post(
        "/api/auth/login", json={"email": "headers@example.com", "password": "wrong-password"}
    )
    assert ok.status_code == 201
    assert failed.status_code == 401
    for response in (ok, failed):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"
