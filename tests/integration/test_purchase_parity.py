"""Purchase's entry points answer alike: the lean path and FastAPI's routes.

A purchase without an Idempotency-Key is served by app/api/hot_paths.py, one with a
key by FastAPI's route; both call app/api/purchase.py, on the current route and on the
original `/api/drops/{id}/purchase`. Each case meets equal state on both entry points;
the status, the body (ids and times aside), the headers that matter and the route
label of the request's metrics must agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app import metrics
from tests.conftest import AppFactory
from tests.support.factories import admin_token, assert_invariant, auth, create_drop, signup

HEADERS = ("content-type", "x-content-type-options", "content-security-policy")
VARYING = ("id", "reservationId", "dropId", "purchasedAt")
_keys = itertools.count()

Request = Callable[[], Awaitable[httpx.Response]]


@dataclass
class World:
    client: httpx.AsyncClient
    admin: str
    route: str  # "reservations" or "drops" (the original route)

    async def held(self, token: str | None = None) -> tuple[str, str, str]:
        """(drop id, a shopper's token, that shopper's live reservation id)."""
        token = token or str((await signup(self.client))["accessToken"])
        drop = str((await create_drop(self.client, self.admin, totalStock=5))["id"])
        reserved = await self.client.post(f"/api/drops/{drop}/reserve", headers=auth(token))
        assert reserved.status_code == 201, reserved.text
        return drop, token, str(reserved.json()["id"])

    def buy(
        self, reservation_id: str, keyed: bool, headers: dict[str, str], content: bytes = b""
    ) -> Request:
        sent = dict(headers)
        if keyed:
            sent["Idempotency-Key"] = f"parity-{next(_keys)}"
        url = f"/api/{self.route}/{reservation_id}/purchase"
        return lambda: self.client.post(url, headers=sent, content=content)


Case = Callable[[World, bool], Awaitable[Request]]


async def bought(w: World, keyed: bool) -> Request:
    _, token, rid = await w.held()
    return w.buy(rid, keyed, auth(token))


async def bought_before(w: World, keyed: bool) -> Request:
    _, token, rid = await w.held()
    assert (await w.buy(rid, False, auth(token))()).status_code == 201
    return w.buy(rid, keyed, auth(token))


async def someone_elses(w: World, keyed: bool) -> Request:
    _, _, rid = await w.held()
    return w.buy(rid, keyed, auth(str((await signup(w.client))["accessToken"])))


async def unknown(w: World, keyed: bool) -> Request:
    _, token, rid = await w.held()
    drop_id = rid.split(".", 1)[0]
    return w.buy(f"{drop_id}.{'0' * len(rid.split('.', 1)[1])}", keyed, auth(token))


async def cancelled(w: World, keyed: bool) -> Request:
    _, token, rid = await w.held()
    gone = await w.client.delete(f"/api/reservations/{rid}", headers=auth(token))
    assert gone.status_code == 204
    return w.buy(rid, keyed, auth(token))


async def signed_out(w: World, keyed: bool) -> Request:
    session = await signup(w.client)
    _, token, rid = await w.held(str(session["accessToken"]))
    out = await w.client.post(
        "/api/auth/logout", headers=auth(token), json={"refreshToken": session["refreshToken"]}
    )
    assert out.status_code == 204, out.text
    return w.buy(rid, keyed, auth(token))


async def no_token(w: World, keyed: bool) -> Request:
    _, _, rid = await w.held()
    return w.buy(rid, keyed, {})


async def body_given(w: World, keyed: bool) -> Request:
    _, token, rid = await w.held()
    headers = {**auth(token), "Content-Type": "application/json"}
    return w.buy(rid, keyed, headers, b'{"quantity": 2}')


CASES: dict[str, tuple[Case, int, str | None]] = {
    "bought": (bought, 201, None),
    "bought before": (bought_before, 200, None),
    "someone else's": (someone_elses, 404, "RESERVATION_NOT_FOUND"),
    "unknown": (unknown, 404, "RESERVATION_NOT_FOUND"),
    "cancelled": (cancelled, 409, "RESERVATION_CANCELLED"),
    "signed out": (signed_out, 401, "UNAUTHORIZED"),
    "no token": (no_token, 401, "UNAUTHORIZED"),
    "non-empty body": (body_given, 422, "VALIDATION_ERROR"),
}


@dataclass
class Seen:
    status: int
    body: Any
    headers: dict[str, str | None]
    routes: set[str]


def _route_counts() -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in metrics.REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                route = sample.labels["route"]
                counts[route] = counts.get(route, 0.0) + sample.value
    return counts


async def _observe(request: Request) -> Seen:
    before = _route_counts()
    response = await request()
    after = _route_counts()
    body = response.json() if response.content else None
    if isinstance(body, dict) and response.status_code in (200, 201):
        assert all(body.pop(name) for name in VARYING)
    return Seen(
        response.status_code,
        body,
        {name: response.headers.get(name) for name in HEADERS},
        {route for route, n in after.items() if n != before.get(route, 0.0)},
    )


@pytest.mark.parametrize("route", ["reservations", "drops"])
@pytest.mark.parametrize("name", list(CASES))
async def test_both_entry_points_answer_alike(make_app: AppFactory, name: str, route: str) -> None:
    client, container = await make_app()
    world = World(client, await admin_token(client, container), route)
    case, status, code = CASES[name]
    lean = await _observe(await case(world, False))
    routed = await _observe(await case(world, True))

    assert lean.status == status, lean.body
    assert code is None or lean.body["code"] == code
    assert (routed.status, routed.body) == (lean.status, lean.body)
    assert routed.headers == lean.headers
    template = f"/api/{route}/{{reservation_id}}/purchase"
    assert lean.routes == routed.routes == {template}
    await assert_invariant(container)
