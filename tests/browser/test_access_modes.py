"""Queue and draw drops on the storefront, in a real browser against a real server: the
position falling to "you're in", and the draw's result arriving as a push; the console
verifies the draw's fairness record in the browser."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Browser, expect

from tests.browser.conftest import Shop, sign_in, sign_up
from tests.support.factories import auth


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)  # a poll interval between reads of a condition


async def test_a_queue_drop_shows_the_position_falling_to_youre_in(
    shop: Shop, browser: Browser
) -> None:
    drop = await shop.create_drop(
        name="Air Queue",
        totalStock=10,
        access="queue",
        queue={"admitPerMinute": 120, "passSeconds": 120},  # one ticket every 0.5 s
        startsAt=iso(datetime.now(UTC) + timedelta(seconds=1)),
    )
    for n in range(4):
        token = await shop.customer(f"early{n}@example.com")
        joined = await shop.http.post(
            f"/api/drops/{drop['id']}/queue", json={}, headers=auth(token)
        )
        assert joined.status_code == 201, joined.text

    async def order_fixed() -> bool:
        record = (await shop.http.get(f"/api/drops/{drop['id']}/fairness")).json()
        return record["orderFixedAt"] is not None

    await _until(order_fixed, 10, "the pre-queue was never ordered")
    page = await shop.page(browser)
    await page.goto(shop.url)
    await sign_up(page, "late@example.com")
    card = page.locator(f'article[data-drop-id="{drop["id"]}"]')
    await card.get_by_role("button", name="Join the queue").click()
    position = card.locator("[data-position]")
    await expect(position).to_have_text("5")  # after the four who waited before the start
    ahead = card.locator("[data-ahead]")
    first_ahead = int(await ahead.inner_text())
    assert first_ahead >= 1, "admitted before a place could be shown"
    await expect(ahead).not_to_have_text(str(first_ahead), timeout=5000)  # it falls
    await expect(card.get_by_text("You're in!")).to_be_visible(timeout=10_000)
    await expect(card.locator('[data-timer="pass"]')).to_be_visible()
    await card.get_by_role("button", name="Reserve", exact=True).click()
    await expect(card.locator(".hold")).to_be_visible()


async def test_a_draw_shows_its_result_as_a_push_and_its_record_verifies(
    shop: Shop, browser: Browser
) -> None:
    now = datetime.now(UTC)
    drop = await shop.create_drop(
        name="Air Draw",
        sizes=[{"size": "US 9", "totalStock": 3}, {"size": "US 10", "totalStock": 1}],
        access="draw",
        draw={"closesAt": iso(now + timedelta(seconds=5)), "claimSeconds": 120},
        startsAt=iso(now),
    )
    for n in range(2):
        token = await shop.customer(f"entrant{n}@example.com")
        entered = await shop.http.post(
            f"/api/drops/{drop['id']}/entries", json={"size": "US 9"}, headers=auth(token)
        )
        assert entered.status_code == 201, entered.text

    page = await shop.page(browser)
    await page.goto(shop.url)
    await sign_up(page, "lucky@example.com")
    card = page.locator(f'article[data-drop-id="{drop["id"]}"]')
    await card.locator('.sizes input[value="US 9"]').check()
    await card.get_by_role("button", name="Enter the draw").click()
    await expect(card.get_by_text("You're in the draw for US 9")).to_be_visible()
    await expect(card.locator('[data-timer="result"]')).to_be_visible()
    await expect(card.get_by_role("link", name="Fairness record")).to_have_attribute(
        "href", f"/api/drops/{drop['id']}/fairness"
    )
    # Three entrants for three US 9s: everyone wins, the shopper included. The page reads
    # the entry again only 15 s after closesAt (app.js): a result within 10 s was pushed.
    await expect(card.locator('[data-result="won"]')).to_be_visible(timeout=10_000)
    assert datetime.now(UTC) < now + timedelta(seconds=5 + 15)
    hold = card.locator(".hold")
    await expect(hold).to_contain_text("US 9")
    await hold.get_by_role("button", name="Buy").click()
    await expect(page.locator("#message")).to_contain_text("Bought")

    admin = await shop.page(browser)
    await admin.goto(shop.url + "/admin")
    await sign_in(admin, "console-admin@example.com")
    await admin.locator(f'#droplist [data-drop-id="{drop["id"]}"]').click()
    await admin.get_by_role("button", name="Verify the order").click()
    await expect(admin.locator("#fairness-result")).to_contain_text("Verified: all 3 entries")
