"""The operator console (/admin) in a real browser against a real server: an admin
creates a sized drop and restocks it while a script reserves and the chart moves; a
customer is refused."""

from __future__ import annotations

import asyncio
import contextlib

from playwright.async_api import Browser, expect

from tests.browser.conftest import LAPTOP, PHONE, Shop, screenshot, sign_in
from tests.support.factories import PASSWORD, auth


async def _reserve_forever(shop: Shop, drop_id: str, stop: asyncio.Event) -> int:
    """A script of shoppers: sign up, reserve US 9 (falling back to US 10), over and over."""
    made = 0
    while not stop.is_set():
        token = await shop.customer(f"script{made}@example.com")
        await shop.http.post(
            f"/api/drops/{drop_id}/reserve",
            json={"size": "US 9", "fallbackSizes": ["US 10"]},
            headers=auth(token),
        )
        made += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)  # about ten shoppers a second
    return made


async def test_an_admin_creates_a_sized_drop_restocks_it_and_the_chart_moves(
    shop: Shop, browser: Browser
) -> None:
    page = await shop.page(browser)
    await page.goto(shop.url + "/admin")
    await sign_in(page, "console-admin@example.com")
    await expect(page.locator("#console")).to_be_visible()

    await page.get_by_label("Name", exact=True).fill("Console Runner")
    await page.get_by_label("Brand").fill("Adidas")
    await page.get_by_label("Sizes and stock").fill("US 8=5, US 9=5, US 10=5")
    await page.get_by_role("button", name="Create drop").click()
    await expect(page.locator("#message")).to_contain_text("Created Console Runner")
    await expect(page.locator("#detail-title")).to_have_text("Console Runner")
    created = [
        d for d in (await shop.http.get("/api/drops")).json() if d["name"] == "Console Runner"
    ]
    assert [(s["size"], s["totalStock"]) for s in created[0]["sizes"]] == [
        ("US 8", 5),
        ("US 9", 5),
        ("US 10", 5),
    ]
    drop_id = created[0]["id"]

    await page.locator("#r-size").select_option("US 9")
    await page.locator("#r-qty").fill("20")
    await page.get_by_role("button", name="Restock").click()
    await expect(page.locator("#message")).to_contain_text("Restocked 20 in US 9")
    await expect(page.locator('#sizes tr[data-size="US 9"] [data-available]')).to_have_text("25")

    summary = page.locator("#summary")
    before = await page.locator("#chart-outcomes").evaluate("c => c.toDataURL()")
    stop = asyncio.Event()
    script = asyncio.create_task(_reserve_forever(shop, drop_id, stop))
    try:
        await expect(summary).to_have_attribute("data-ok", "0")
        # The tally reaches the chart within its flush second plus the poll's.
        for wanted in ("3", "6"):
            await page.wait_for_function(
                "n => Number(document.querySelector('#summary').dataset.ok) >= n",
                arg=int(wanted),
                timeout=10_000,
            )
        after = await page.locator("#chart-outcomes").evaluate("c => c.toDataURL()")
        assert after != before, "the chart did not redraw"
        held = int(await page.locator('[data-figure="holds"]').inner_text())
        assert held >= 6
    finally:
        stop.set()
        made = await script
    assert made >= 6
    await expect(page.locator("#invariant [data-healthy]")).to_have_attribute(
        "data-healthy", "true", timeout=5000
    )
    await screenshot(page, "console-laptop")
    await page.set_viewport_size(PHONE)
    await screenshot(page, "console-phone")
    await page.set_viewport_size(LAPTOP)


async def test_a_customer_is_refused_the_console(shop: Shop, browser: Browser) -> None:
    await shop.customer("nosy@example.com")
    page = await shop.page(browser)
    await page.goto(shop.url + "/admin")
    await page.get_by_label("Email").fill("nosy@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    async with page.expect_response(lambda r: "/api/admin/" in r.url) as answered:
        await page.get_by_role("button", name="Sign in").click()
    refusal = await answered.value
    assert refusal.status == 403
    assert (await refusal.json())["code"] == "FORBIDDEN"
    await expect(page.locator("#refused")).to_contain_text("403 FORBIDDEN")
    await expect(page.locator("#refused")).to_have_attribute("role", "alert")
    await expect(page.locator("#console")).to_be_hidden()
    await expect(page.get_by_role("button", name="Create drop")).to_be_hidden()
