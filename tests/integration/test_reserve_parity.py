"""Reserve's two entry points answer alike: the lean path and FastAPI's route.

A reserve without an Idempotency-Key is served by app/api/hot_paths.py, one with a
key by FastAPI's route; both call app/api/reserve.py. Each case below is set up so
that both requests meet the same state, then compares what a client and an operator
see: the status, the body (ids and times aside, which differ by nature), the headers
that matter, and the metrics labels the request recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import Metric

from app import metrics
from app.container import Container
from tests.conftest import AppFactory
from tests.support.factories import admin_token, auth, create_drop, in_future, signup

HEADERS = (
    "content-type",
    "retry-after",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "content-security-policy",
    "idempotent-replayed",
)
VARYING = ("id", "expiresAt", "createdAt")  # differ between any two holds (dropId: per case)
RESERVE_LIMIT = 4  # reserves per user and minute in this app
_keys = itertools.count()


@dataclass
class Seen:
    status: int
    body: Any
    headers: dict[str, str | None]
    recorded: set[tuple[str, tuple[tuple[str, str], ...]]]


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    collected: list[Metric] = [*metrics.REQUESTS.collect(), *metrics.RESERVE_OUTCOMES.collect()]
    for metric in collected:
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _observe(
    client: httpx.AsyncClient, request: Callable[[], Awaitable[httpx.Response]]
) -> Seen:
    before = _samples()
    response = await request()
    after = _samples()
    recorded = {key for key, value in after.items() if value != before.get(key, 0.0)}
    body = response.json() if response.content else None
    if isinstance(body, dict) and response.status_code == 201:
        assert all(body.pop(name) for name in VARYING)
        assert f"/api/drops/{body.pop('dropId')}/reserve" == response.request.url.path
    return Seen(
        response.status_code, body, {name: response.headers.get(name) for name in HEADERS}, recorded
    )


@dataclass
class World:
    client: httpx.AsyncClient
    container: Container
    admin: str

    async def shopper(self) -> str:
        return str((await signup(self.client))["accessToken"])

    async def drop(self, **fields: Any) -> str:
        return str((await create_drop(self.client, self.admin, **fields))["id"])

    def post(
        self, drop_id: str, keyed: bool, headers: dict[str, str], content: bytes = b""
    ) -> Callable[[], Awaitable[httpx.Response]]:
        sent = dict(headers)
        if keyed:
            sent["Idempotency-Key"] = f"parity-{next(_keys)}"
        return lambda: self.client.post(
            f"/api/drops/{drop_id}/reserve", headers=sent, content=content
        )


# Each case prepares the state one request meets and returns that request; it is
# called once per entry point, so both meet equal (not shared) state.
Case = Callable[[World, bool], Awaitable[Callable[[], Awaitable[httpx.Response]]]]


async def success(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post(await w.drop(), keyed, auth(await w.shopper()))


async def sold_out(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    drop = await w.drop(totalStock=1)
    assert (await w.post(drop, False, auth(await w.shopper()))()).status_code == 201
    return w.post(drop, keyed, auth(await w.shopper()))


async def limit_reached(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    drop, token = await w.drop(), await w.shopper()
    assert (await w.post(drop, False, auth(token))()).status_code == 201
    return w.post(drop, keyed, auth(token))


async def not_live(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post(await w.drop(startsAt=in_future(3600)), keyed, auth(await w.shopper()))


async def not_found(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post("00000000deadbeef", keyed, auth(await w.shopper()))


async def malformed_id(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post("not-an-id", keyed, auth(await w.shopper()))


async def no_token(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post(await w.drop(), keyed, {})


async def invalid_token(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    return w.post(await w.drop(), keyed, auth("not.a.token"))


async def body_given(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    headers = {**auth(await w.shopper()), "Content-Type": "application/json"}
    return w.post(await w.drop(), keyed, headers, b'{"quantity": 2}')


async def cooldown(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    drop, token = await w.drop(), await w.shopper()
    held = await w.post(drop, False, auth(token))()
    gone = await w.client.delete(f"/api/reservations/{held.json()['id']}", headers=auth(token))
    assert gone.status_code == 204
    return w.post(drop, keyed, auth(token))


async def rate_limited(w: World, keyed: bool) -> Callable[[], Awaitable[httpx.Response]]:
    drop, token = await w.drop(perUserLimit=RESERVE_LIMIT), await w.shopper()
    for _ in range(RESERVE_LIMIT):
        assert (await w.post(drop, False, auth(token))()).status_code == 201
    return w.post(drop, keyed, auth(token))


CASES: dict[str, tuple[Case, int, str | None]] = {
    "success": (success, 201, None),
    "sold out": (sold_out, 409, "SOLD_OUT"),
    "limit reached": (limit_reached, 409, "LIMIT_REACHED"),
    "not live": (not_live, 409, "DROP_NOT_LIVE"),
    "unknown drop": (not_found, 404, "DROP_NOT_FOUND"),
    "malformed id": (malformed_id, 404, "DROP_NOT_FOUND"),
    "no token": (no_token, 401, "UNAUTHORIZED"),
    "invalid token": (invalid_token, 401, "UNAUTHORIZED"),
    "non-empty body": (body_given, 422, "VALIDATION_ERROR"),
    "cooldown": (cooldown, 409, "COOLDOWN"),
    "rate limited": (rate_limited, 429, "RATE_LIMITED"),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_both_entry_points_answer_alike(make_app: AppFactory, name: str) -> None:
    client, container = await make_app(
        rate_limits="on",
        rate_limit_reserve=f"{RESERVE_LIMIT}/minute",
        rate_limit_signup_ip="1000/minute",
    )
    world = World(client, container, await admin_token(client, container))
    case, status, code = CASES[name]
    lean = await _observe(client, await case(world, False))
    routed = await _observe(client, await case(world, True))

    assert lean.status == status, lean.body
    assert code is None or lean.body["code"] == code
    assert (routed.status, routed.body) == (lean.status, lean.body)
    assert routed.headers == lean.headers
    assert routed.recorded == lean.recorded
    route_labels = {
        dict(labels)["route"] for metric, labels in lean.recorded if "http_requests" in metric
    }
    assert route_labels == {"/api/drops/{drop_id}/reserve"}
    if status == 429 or code == "COOLDOWN":
        assert lean.headers["retry-after"] is not None
