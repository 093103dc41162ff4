"""Read your writes: every admin change shows in the next request, whichever process answers.

Two apps stand for two API processes on the same stores, each with its own storefront
cache and a window far longer than the test. Changes go through one; the list is read
through the other, whose cache was filled before the change.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import AppFactory
from tests.support.factories import admin_token, auth, create_drop, in_future, signup

WINDOW_MS = 5000  # the unfiltered list's cache window: longer than any step below


def _by_id(listing: httpx.Response) -> dict[str, dict[str, Any]]:
    assert listing.status_code == 200, listing.text
    return {drop["id"]: drop for drop in listing.json()}


async def test_each_admin_change_shows_in_the_next_listing_of_another_process(
    make_app: AppFactory,
) -> None:
    writer, writer_container = await make_app(drops_cache_ms=WINDOW_MS)
    reader, _ = await make_app(drops_cache_ms=WINDOW_MS)
    admin = await admin_token(writer, writer_container)
    first = await create_drop(writer, admin, name="Air One", totalStock=5)
    assert first["id"] in _by_id(await reader.get("/api/drops"))  # the reader's cache is full

    created = await create_drop(writer, admin, name="Air Two", totalStock=7)
    assert created["id"] in _by_id(await reader.get("/api/drops"))

    renamed = await writer.patch(
        f"/api/drops/{created['id']}", json={"name": "Air Two OG"}, headers=auth(admin)
    )
    assert renamed.status_code == 200, renamed.text
    assert _by_id(await reader.get("/api/drops"))[created["id"]]["name"] == "Air Two OG"

    later = in_future(3600).isoformat().replace("+00:00", "Z")
    moved = await writer.patch(
        f"/api/drops/{created['id']}", json={"startsAt": later}, headers=auth(admin)
    )
    assert moved.status_code == 200, moved.text
    shown = _by_id(await reader.get("/api/drops"))[created["id"]]
    assert (shown["startsAt"], shown["status"]) == (moved.json()["startsAt"], "scheduled")

    restocked = await writer.post(
        f"/api/drops/{created['id']}/restock", json={"quantity": 3}, headers=auth(admin)
    )
    assert restocked.status_code == 200, restocked.text
    shown = _by_id(await reader.get("/api/drops"))[created["id"]]
    assert (shown["totalStock"], shown["availableStock"]) == (10, 10)

    cancelled = await writer.patch(
        f"/api/drops/{created['id']}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert cancelled.status_code == 200, cancelled.text
    assert created["id"] not in _by_id(await reader.get("/api/drops"))
    assert first["id"] in _by_id(await reader.get("/api/drops"))


async def test_only_stock_figures_may_lag_within_the_window(make_app: AppFactory) -> None:
    writer, writer_container = await make_app(drops_cache_ms=WINDOW_MS)
    reader, _ = await make_app(drops_cache_ms=WINDOW_MS)
    admin = await admin_token(writer, writer_container)
    drop = await create_drop(writer, admin, totalStock=4)
    before = _by_id(await reader.get("/api/drops"))[drop["id"]]
    shopper = (await signup(writer))["accessToken"]
    held = await writer.post(f"/api/drops/{drop['id']}/reserve", headers=auth(shopper))
    assert held.status_code == 201, held.text
    # A reserve is no admin change: the cached list may still show the old stock...
    assert _by_id(await reader.get("/api/drops"))[drop["id"]] == before
    # ...while the drop's own view is always current.
    assert (await reader.get(f"/api/drops/{drop['id']}")).json()["availableStock"] == 3
