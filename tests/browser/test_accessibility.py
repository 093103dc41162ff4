"""Both pages for people who use a keyboard or a screen reader, or see low contrast:
every control is named, a shopper reserves and buys with the keyboard alone, and text
keeps at least 4.5:1 against its background (WCAG AA)."""

from __future__ import annotations

from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, Shop, sign_in

# Every visible form control's accessible name is its label's text (or aria-label):
# a control without one is announced as a bare "edit text" or "button".
UNNAMED = """() => [...document.querySelectorAll('input, select, button, textarea')]
  .filter(el => el.offsetParent !== null)
  .filter(el => {
    const label = el.labels && el.labels.length ? el.labels[0].textContent.trim() : '';
    const own = el.tagName === 'BUTTON' ? el.textContent.trim() : '';
    return !(label || own || el.getAttribute('aria-label'));
  }).map(el => el.outerHTML.slice(0, 120))"""

# WCAG 2 contrast of each visible text's colour against the first opaque background
# behind it (its own or an ancestor's).
LOW_CONTRAST = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.offsetParent === null && el.tagName !== 'BODY') continue;
    if (el.closest('[aria-hidden="true"], .visually-hidden')) continue;
    const fg = parse(getComputedStyle(el).color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < 4.5) low.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className}: ${node.textContent.trim().slice(0, 30)}`);
  }
  return low;
}"""


async def _check(page: Page) -> None:
    assert await page.evaluate(UNNAMED) == []
    assert await page.evaluate(LOW_CONTRAST) == []


async def test_a_shopper_reserves_and_buys_with_the_keyboard_alone(
    shop: Shop, browser: Browser
) -> None:
    drop = await shop.create_drop(
        name="Air Keys",
        sizes=[{"size": "US 9", "totalStock": 2}, {"size": "US 10", "totalStock": 0}],
    )
    page = await shop.page(browser)
    await page.goto(shop.url)
    await _check(page)  # signed out: the form, a card
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Email")).to_be_focused()
    await page.keyboard.type("keys@example.com")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Create account")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.locator("#message", has_text="Welcome").wait_for()
    card = page.locator(f'article[data-drop-id="{drop["id"]}"]')
    us9 = card.locator('.sizes input[value="US 9"]')
    await us9.focus()
    await page.keyboard.press("Space")
    await expect(us9).to_be_checked()
    reserve = card.get_by_role("button", name="Reserve", exact=True)
    for _ in range(6):  # the fallback choices come between the size and the button
        if await reserve.evaluate("el => el === document.activeElement"):
            break
        await page.keyboard.press("Tab")
    await expect(reserve).to_be_focused()
    await page.keyboard.press("Enter")
    buy = card.get_by_role("button", name="Buy")
    await expect(buy).to_be_visible()
    await _check(page)  # signed in, with a hold
    await buy.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#message")).to_contain_text("Bought")
    await expect(page.locator("#message")).to_have_attribute("role", "status")


async def test_the_console_names_every_control_and_keeps_its_contrast(
    shop: Shop, browser: Browser
) -> None:
    drop = await shop.create_drop(name="Air Console", sizes=[{"size": "US 9", "totalStock": 2}])
    page = await shop.page(browser)
    await page.goto(shop.url + "/admin")
    await _check(page)
    await sign_in(page, "console-admin@example.com")
    await page.locator(f'#droplist [data-drop-id="{drop["id"]}"]').click()
    await expect(page.locator("#invariant [data-healthy]")).to_be_visible()
    await _check(page)
    await expect(page.locator("#chart-outcomes")).to_have_attribute("aria-describedby", "summary")
