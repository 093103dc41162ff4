"""The queue's and the draw's storm routes answer alike on both entry points.

Without a query string they are served by the lean path (app/api/hot_paths.py); with
one, by FastAPI's routes (app/api/routes_access.py); both run app/api/access_flows.py.
Each case asks both, meeting the same state, and compares the status, the body, the
headers that matter and the route label the request metrics recorded.
"""

from __future__ import annotations

from typing import Any

import httpx

from app import metrics
from app.api.hot_paths import HotPaths
from app.config import load_settings
from app.container import Container
from app.main import create_fastapi
from tests.support.factories import admin_token, auth, create_drop, in_future, signup

HEADERS = ("content-type", "x-content-type-options", "content-security-policy")
FRAMEWORK = "?via=framework"  # a query string sends the request to FastAPI's route


def _routes_counted() -> dict[str, float]:
    counted: dict[str, float] = {}
    for metric in metrics.REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                route = sample.labels.get("route", "")
                counted[route] = counted.get(route, 0.0) + sample.value
    return counted


async def _seen(
    client: httpx.AsyncClient, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[Any, ...]:
    before = _routes_counted()
    response = await client.request(method, path, json=body, headers=headers)
    after = _routes_counted()
    routes = sorted(r for r, n in after.items() if n != before.get(r, 0.0))
    headers = {name: response.headers.get(name) for name in HEADERS}
    body = response.json() if response.content else None
    return response.status_code, body, headers, routes


async def test_queue_and_draw_routes_answer_alike_on_both_paths(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    queue = await create_drop(client, admin, startsAt=in_future(3600), access="queue")
    draw = await create_drop(
        client,
        admin,
        totalStock=2,
        sizes=[{"size": "US 9", "totalStock": 1}, {"size": "US 10", "totalStock": 1}],
        access="draw",
        draw={"closesAt": in_future(3600).isoformat().replace("+00:00", "Z")},
    )
    shopper = auth((await signup(client))["accessToken"])
    cases: list[tuple[str, str, Any]] = [
        ("GET", f"/api/drops/{queue['id']}/queue/me", None),  # 404 NOT_IN_QUEUE
        ("POST", f"/api/drops/{queue['id']}/queue", None),  # 201, then 200: compared below
        ("GET", f"/api/drops/{queue['id']}/queue/me", None),
        ("POST", f"/api/drops/{draw['id']}/queue", None),  # 409 ACCESS_MODE_MISMATCH
        ("GET", f"/api/drops/{draw['id']}/entries/me", None),  # 404 NOT_ENTERED
        ("POST", f"/api/drops/{draw['id']}/entries", {"size": "US 11"}),  # 422 UNKNOWN_SIZE
        ("POST", f"/api/drops/{draw['id']}/entries", {"size": "US 9", "extra": 1}),  # 422
        ("POST", f"/api/drops/{draw['id']}/entries", {"size": "US 9"}),
        ("GET", f"/api/drops/{draw['id']}/entries/me", None),
        ("GET", "/api/drops/0123456789abcdef/queue/me", None),  # 404 DROP_NOT_FOUND
        ("GET", "/api/drops/not-an-id/entries/me", None),  # 404 DROP_NOT_FOUND
    ]
    for method, path, body in cases:
        lean = await _seen(client, method, path, body, shopper)
        framework = await _seen(client, method, path + FRAMEWORK, body, shopper)
        if lean[0] == 201:  # the first join or entry: the framework's repeat answers 200
            assert framework[0] == 200
            assert framework[1:] == lean[1:], path
        else:
            assert framework == lean, (method, path)
        assert len(lean[3]) == 1  # counted under the route's own template, on both paths
    mine = f"/api/drops/{queue['id']}/queue/me"
    unsigned = await _seen(client, "GET", mine, None, {})
    assert unsigned[0] == 401
    assert unsigned == await _seen(client, "GET", mine + FRAMEWORK, None, {})


def test_the_lean_path_takes_exactly_the_storm_routes_of_queues_and_draws() -> None:
    """Which requests HotPaths serves itself: the four storm routes, each as the route
    FastAPI declares; anything else (the public counts, a query string, another method,
    an Idempotency-Key) goes to FastAPI."""
    settings = load_settings(_env_file=None, database_url="postgresql://x", redis_url="redis://x")
    api = create_fastapi(settings, None)
    hot = HotPaths(api, settings)

    def route_of(method: str, path: str, query: bytes = b"", keyed: bool = False) -> Any:
        headers = [(b"idempotency-key", b"k1")] if keyed else []
        scope = {"method": method, "path": path, "query_string": query, "headers": headers}
        return hot._route_of(scope)

    drop = "0123456789abcdef"
    for method, tail, template in [
        ("POST", "queue", "/api/drops/{drop_id}/queue"),
        ("GET", "queue/me", "/api/drops/{drop_id}/queue/me"),
        ("POST", "entries", "/api/drops/{drop_id}/entries"),
        ("GET", "entries/me", "/api/drops/{drop_id}/entries/me"),
    ]:
        route = route_of(method, f"/api/drops/{drop}/{tail}")
        assert route is not None
        assert (route.path, method in route.methods) == (template, True)
        assert route_of(method, f"/api/drops/{drop}/{tail}", query=b"a=1") is None
        assert route_of(method, f"/api/drops/{drop}/{tail}", keyed=True) is None
    assert route_of("GET", f"/api/drops/{drop}/queue") is None  # anyone's counts
    assert route_of("GET", f"/api/drops/{drop}/entries") is None
    assert route_of("DELETE", f"/api/drops/{drop}/queue/me") is None
    assert route_of("POST", f"/api/drops/{drop}/x/queue") is None


async def test_a_signed_out_session_is_refused_on_every_storm_route(
    client: httpx.AsyncClient, container: Container
) -> None:
    """The sign-out check rides on each script (an optional last KEY): a revoked access
    token is 401 at once, on both entry points, before anything is read or written."""
    admin = await admin_token(client, container)
    queue = await create_drop(client, admin, startsAt=in_future(3600), access="queue")
    draw = await create_drop(
        client,
        admin,
        access="draw",
        draw={"closesAt": in_future(3600).isoformat().replace("+00:00", "Z")},
    )
    session = await signup(client)
    shopper = auth(session["accessToken"])
    joined = await client.post(f"/api/drops/{queue['id']}/queue", headers=shopper)
    assert joined.status_code == 201
    out = await client.post(
        "/api/auth/logout", json={"refreshToken": session["refreshToken"]}, headers=shopper
    )
    assert out.status_code == 204
    for method, path in [
        ("POST", f"/api/drops/{queue['id']}/queue"),
        ("GET", f"/api/drops/{queue['id']}/queue/me"),
        ("POST", f"/api/drops/{draw['id']}/entries"),
        ("GET", f"/api/drops/{draw['id']}/entries/me"),
    ]:
        for suffix in ("", FRAMEWORK):
            refused = await client.request(method, path + suffix, headers=shopper)
            assert refused.status_code == 401, (method, path, suffix, refused.text)
            assert refused.json()["code"] == "UNAUTHORIZED"
    assert await container.redis.hlen(f"{{d:{draw['id']}}}:e:users") == 0  # nothing entered
