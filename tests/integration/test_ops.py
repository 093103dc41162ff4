"""Operations endpoints: liveness, readiness, metrics, OpenAPI, docs and the live page."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.container import Container
from tests.support.factories import admin_token, auth, create_drop, signup

METHODS = ("get", "post", "put", "patch", "delete")


async def metric_samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[Any]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, frozenset[Any]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers.get("x-request-id")


async def test_readyz_with_both_stores(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "postgres": True, "redis": True}


async def test_metrics_is_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert "sneakerdrop_http_requests" in names
    assert "sneakerdrop_http_request_duration_seconds" in names
    assert "sneakerdrop_http_requests_total" in response.text


async def test_metrics_count_requests_per_route_and_reserve_outcomes(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    drop = await create_drop(client, admin, totalStock=1)
    first, second = await signup(client), await signup(client)
    before = await metric_samples(client)

    held = await client.post(f"/api/drops/{drop['id']}/reserve", headers=auth(first["accessToken"]))
    assert held.status_code == 201, held.text
    refused = await client.post(
        f"/api/drops/{drop['id']}/reserve", headers=auth(second["accessToken"])
    )
    assert refused.status_code == 409
    listed = await client.get(f"/api/drops/{drop['id']}")
    assert listed.status_code == 200

    after = await metric_samples(client)
    reserve = "sneakerdrop_reserve_total"
    assert value(after, reserve, code="OK") - value(before, reserve, code="OK") == 1
    assert value(after, reserve, code="SOLD_OUT") - value(before, reserve, code="SOLD_OUT") == 1
    requests = "sneakerdrop_http_requests_total"
    route = "/api/drops/{drop_id}/reserve"
    for status, count in (("201", 1), ("409", 1)):
        labels = {"method": "POST", "route": route, "status": status}
        assert value(after, requests, **labels) - value(before, requests, **labels) == count
    one = {"method": "GET", "route": "/api/drops/{drop_id}", "status": "200"}
    assert value(after, requests, **one) - value(before, requests, **one) == 1
    text = (await client.get("/metrics")).text
    assert "sneakerdrop_reserve_total" in text


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    schema: dict[str, Any] = response.json()
    return schema


async def test_openapi_is_3_1(client: httpx.AsyncClient) -> None:
    schema = await openapi(client)
    assert schema["openapi"].startswith("3.1")
    assert "/api/drops" in schema["paths"]


async def test_openapi_lists_reserve_errors(client: httpx.AsyncClient) -> None:
    schema = await openapi(client)
    responses = schema["paths"]["/api/drops/{drop_id}/reserve"]["post"]["responses"]
    assert {"201", "401", "404", "409", "422", "429", "503"} <= set(responses)
    problem = responses["409"]["content"]["application/problem+json"]["schema"]
    assert problem
    assert "SOLD_OUT" in responses["409"]["description"]
    assert "LIMIT_REACHED" in responses["409"]["description"]


async def test_openapi_every_api_operation_has_a_4xx(client: httpx.AsyncClient) -> None:
    schema = await openapi(client)
    operations = [
        (method, path, op)
        for path, item in schema["paths"].items()
        if path.startswith("/api")
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(operations) >= 14
    missing = [
        f"{method.upper()} {path}"
        for method, path, op in operations
        if not any(code.startswith("4") for code in op.get("responses", {}))
    ]
    assert missing == []


async def test_openapi_admin_routes_list_their_errors(client: httpx.AsyncClient) -> None:
    paths = (await openapi(client))["paths"]
    expected = {
        ("post", "/api/drops"): {"401", "403", "422"},
        ("patch", "/api/drops/{drop_id}"): {"401", "403", "404", "409", "422"},
        ("post", "/api/drops/{drop_id}/restock"): {"401", "403", "404", "409", "422"},
        ("get", "/api/drops/{drop_id}"): {"404"},
        ("get", "/api/drops"): {"422"},
    }
    for (method, path), codes in expected.items():
        assert codes <= set(paths[path][method]["responses"]), (method, path)


async def test_docs_is_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "openapi.json" in response.text


async def test_root_is_the_live_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "socket.io" in response.text.lower()
