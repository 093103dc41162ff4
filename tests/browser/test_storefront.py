"""The storefront (/) in a real browser against a real server: sign up, a countdown, a
size with a fallback, the hold's countdown, a purchase; a second browser's live stock;
no request leaving the server's origin; a session outliving its access token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import (
    LAPTOP,
    PHONE,
    Shop,
    screenshot,
    sign_in,
    sign_up,
    start_shop,
)
from tests.support.factories import auth
from tests.support.stores import StoreUrls


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def card(page: Page, drop_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'article[data-drop-id="{drop_id}"]')


async def test_a_shopper_signs_up_waits_reserves_us9_with_a_fallback_and_buys(
    shop: Shop, browser: Browser
) -> None:
    opens = datetime.now(UTC) + timedelta(seconds=4)
    drop = await shop.create_drop(
        name="Air Countdown",
        brand="Nike",
        sizes=[
            {"size": "US 8", "totalStock": 2},
            {"size": "US 9", "totalStock": 1},
            {"size": "US 10", "totalStock": 3},
        ],
        startsAt=iso(opens),
    )
    page = await shop.page(browser)
    await page.goto(shop.url)
    await sign_up(page, "shopper@example.com")
    box = card(page, drop["id"])
    await expect(box.locator('[data-timer="opens"]')).to_be_visible()
    reserve = box.get_by_role("button", name="Opens soon")
    await expect(reserve).to_be_disabled()

    await box.locator('.sizes input[value="US 9"]').check()
    await box.locator('.fallbacks input[value="US 10"]').check()
    # The countdown runs out and the drop opens without a reload.
    await expect(box.get_by_role("button", name="Reserve", exact=True)).to_be_enabled(
        timeout=10_000
    )
    assert datetime.now(UTC) >= opens - timedelta(milliseconds=500)

    # Someone else takes the last US 9: the page greys it out, live.
    rival = await shop.customer("rival@example.com")
    taken = await shop.http.post(
        f"/api/drops/{drop['id']}/reserve", json={"size": "US 9"}, headers=auth(rival)
    )
    assert taken.status_code == 201, taken.text
    await expect(box.locator('.sizes [data-size="US 9"]')).to_have_class("size out")

    await box.get_by_role("button", name="Reserve", exact=True).click()
    hold = box.locator(".hold")
    await expect(hold).to_contain_text("US 10")
    await expect(page.locator("#message")).to_contain_text("US 9 was gone")
    countdown = hold.locator('[data-timer="hold"]')
    first = await countdown.text_content()
    await expect(countdown).not_to_have_text(first or "", timeout=3000)  # it ticks
    await screenshot(page, "storefront-laptop")
    await page.set_viewport_size(PHONE)
    await screenshot(page, "storefront-phone")
    await page.set_viewport_size(LAPTOP)

    await hold.get_by_role("button", name="Buy").click()
    await expect(page.locator("#message")).to_contain_text("Bought")
    await expect(page.locator("#my-purchases")).to_contain_text("US 10")
    await expect(box.locator(".hold")).to_have_count(0)
    purchases = await shop.http.get("/api/me/purchases", headers=auth(await _token(page)))
    assert [p["size"] for p in purchases.json()] == ["US 10"]


async def _token(page: Page) -> str:
    token: str = await page.evaluate(
        "JSON.parse(localStorage.getItem('sneakerdrop.session')).accessToken"
    )
    return token


async def test_a_second_browser_sees_the_stock_fall_within_a_second(
    shop: Shop, browser: Browser
) -> None:
    drop = await shop.create_drop(name="Air Live", totalStock=5)
    buyer = await shop.page(browser)
    watcher = await shop.page(browser, PHONE)
    await watcher.goto(shop.url)
    await expect(watcher.locator("#live")).to_have_attribute("data-on", "1")
    await buyer.goto(shop.url)
    await sign_up(buyer, "fast@example.com")
    stock = card(watcher, drop["id"]).locator("[data-stock]")
    await expect(stock).to_have_text("5")
    async with buyer.expect_response(lambda r: r.url.endswith("/reserve")) as reserved:
        await card(buyer, drop["id"]).get_by_role("button", name="Reserve", exact=True).click()
    assert (await reserved.value).status == 201
    answered = time.monotonic()
    await expect(stock).to_have_text("4", timeout=1000)
    assert time.monotonic() - answered < 1.0


async def test_with_the_network_cut_off_both_pages_work_and_nothing_leaves_the_origin(
    shop: Shop, browser: Browser
) -> None:
    """The browser resolves no name but 127.0.0.1 (conftest); on top, any request for
    another origin is aborted here and would show in the log the test asserts on."""
    drop = await shop.create_drop(name="Air Offline", totalStock=3)
    page = await shop.page(browser)
    origin = shop.url
    ws_origin = origin.replace("http://", "ws://")
    await page.context.route(
        lambda url: not url.startswith(origin), lambda route: route.abort("internetdisconnected")
    )
    await page.goto(origin)
    await expect(page.locator("#live")).to_have_attribute("data-on", "1")
    await sign_up(page, "offline@example.com")
    await card(page, drop["id"]).get_by_role("button", name="Reserve", exact=True).click()
    await expect(card(page, drop["id"]).locator(".hold")).to_be_visible()
    await page.goto(origin + "/admin")
    await expect(page.locator("#refused")).to_contain_text("403")  # a customer, refused
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, "console-admin@example.com")
    await expect(page.locator("#console")).to_be_visible()
    await page.locator(f'#droplist [data-drop-id="{drop["id"]}"]').click()
    await expect(page.locator("#summary")).to_contain_text("1 held")
    await expect(page.locator("#live")).to_have_attribute("data-on", "1")

    assert shop.requests, "no request logged"
    strays = [u for u in shop.requests if not u.startswith((origin + "/", ws_origin + "/"))]
    assert strays == []
    assert any(u.startswith(ws_origin + "/socket.io/") for u in shop.requests)  # live, not polling
    assert shop.ws_frames, "no WebSocket was accepted: the pages fell back to long-polling"
    assert any(u.endswith("/static/socket.io.min.js") for u in shop.requests)


@pytest.fixture
async def short_tokens(stores: StoreUrls, tmp_path: Path) -> AsyncIterator[Shop]:
    async for running in start_shop(stores, tmp_path, ACCESS_TOKEN_TTL_SECONDS="10"):
        yield running


@pytest.mark.slow
async def test_after_the_access_tokens_lifetime_the_shopper_still_reserves(
    short_tokens: Shop, browser: Browser
) -> None:
    shop = short_tokens
    drop = await shop.create_drop(name="Air Long Session", totalStock=3)
    page = await shop.page(browser)
    await page.goto(shop.url)
    await sign_up(page, "patient@example.com")
    first = await _token(page)

    async def first_token_expired() -> bool:
        me = await shop.http.get("/api/auth/me", headers=auth(first))
        return me.status_code == 401

    deadline = time.monotonic() + 25
    while not await first_token_expired():
        assert time.monotonic() < deadline, "the first access token never expired"
        await page.wait_for_timeout(500)  # a poll interval, not a synchronisation
    await card(page, drop["id"]).get_by_role("button", name="Reserve", exact=True).click()
    await expect(card(page, drop["id"]).locator(".hold")).to_be_visible()
    assert any(u.endswith("/api/auth/refresh") for u in shop.requests)
    assert await _token(page) != first
    held = await shop.http.get("/api/me/reservations", headers=auth(await _token(page)))
    assert [r["dropId"] for r in held.json()] == [drop["id"]]
