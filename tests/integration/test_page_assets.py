"""The page loads everything from the API itself, under a CSP that allows 'self' only;
/metrics needs METRICS_TOKEN when one is set."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import AppFactory

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"
SOCKET_IO_VERSION = "4.8.4"
SOCKET_IO_SHA256 = "d5d79a35039e860b32bdef4795528b05c2f788d4b2d9dacc913120e2878f7b3f"


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


async def test_the_page_has_a_self_only_csp(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Host": "shop.example:8443"})
    assert response.status_code == 200
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, policies
    csp = directives(policies[0])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://shop.example:8443", "wss://shop.example:8443"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]


async def test_a_crafted_host_does_not_reach_the_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Host": "evil.example; script-src *"})
    csp = directives(response.headers["content-security-policy"])
    assert csp["connect-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]


async def test_the_page_references_no_other_origin_and_no_inline_code(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/")).text
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", page.replace("<!doctype", "")), page
    assert "<style" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert not re.search(r"\son[a-z]+=", page), "inline event handler"
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(sources) == ["/static/app.css", "/static/app.js", "/static/socket.io.min.js"]
    for source in sources:
        served = await client.get(source)
        assert served.status_code == 200, source
        assert served.content == (STATIC / source.removeprefix("/static/")).read_bytes()
    script = (await client.get("/static/app.js")).text
    assert "io(" in script


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("socket.io.min.js", "text/javascript"),
    ],
)
async def test_assets_are_served_with_their_type(
    client: httpx.AsyncClient, name: str, kind: str
) -> None:
    response = await client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(kind)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"


@pytest.mark.parametrize(
    "name", ["index.html", "VENDORED.md", "socket.io-client.LICENSE", "..%2Fconfig.py", "nope.js"]
)
async def test_only_the_page_assets_are_served(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/static/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_the_vendored_socket_io_client_is_the_official_v4_with_its_license() -> None:
    vendored = (STATIC / "socket.io.min.js").read_bytes()
    assert vendored.startswith(b"/*!\n * Socket.IO v" + SOCKET_IO_VERSION.encode())
    assert b"Released under the MIT License." in vendored[:200]
    assert hashlib.sha256(vendored).hexdigest() == SOCKET_IO_SHA256
    record = (STATIC / "VENDORED.md").read_text()
    assert SOCKET_IO_VERSION in record
    assert SOCKET_IO_SHA256 in record
    assert "MIT License" in (STATIC / "socket.io-client.LICENSE").read_text()


# --- /metrics ---------------------------------------------------------------------

TOKEN = "metrics-token-" + "m" * 32


async def test_metrics_need_the_token_when_one_is_set(make_app: AppFactory) -> None:
    client, _ = await make_app(metrics_token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "UNAUTHORIZED"
        assert "sneakerdrop_" not in refused.text
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert "sneakerdrop_" in allowed.text


async def test_metrics_are_open_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "sneakerdrop_" in response.text
