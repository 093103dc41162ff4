"""Browser tests: Playwright driving Debian's Chromium against a real `sneakerdrop serve`.

Playwright's own browser download is not used (nor reachable): the session fixture
installs Debian's `chromium` when it is missing and launches it by path. The browser
resolves no host name but 127.0.0.1, so every test runs with the network cut off from
everything but the server; each page's requests are logged for the tests to inspect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocket, async_playwright

from tests.support.factories import PASSWORD, auth
from tests.support.serve import running_serve
from tests.support.stores import StoreUrls

ROOT = Path(__file__).resolve().parents[2]
# The pictures land in build/ (git-ignored) on every run; `SCREENSHOTS_DIR=docs/img`
# refreshes the README's, so a test run never leaves the checkout changed.
SHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "build/screenshots")
ADMIN_EMAIL = "console-admin@example.com"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 900}


def _chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing (CI runs as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900
    )
    found = shutil.which("chromium")
    assert found, "apt-get install chromium left no chromium on PATH"
    return found


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=_chromium(),
            # No name resolves but the server's address: nothing can leave for the internet.
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        yield launched
        await launched.close()


@dataclass
class Shop:
    """A running server, an admin token for arranging drops, and the requests pages made."""

    url: str
    http: httpx.AsyncClient
    admin: str
    requests: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)
    # Frames the pages' WebSockets received: an upgrade the server refused receives none.
    ws_frames: list[str | bytes] = field(default_factory=list)

    async def create_drop(self, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"name": "Air Test 1", "priceCents": 18000}
        if "sizes" not in fields:
            body["totalStock"] = 10
        body.update(fields)
        response = await self.http.post("/api/drops", json=body, headers=auth(self.admin))
        assert response.status_code == 201, response.text
        drop: dict[str, Any] = response.json()
        return drop

    async def customer(self, email: str) -> str:
        response = await self.http.post(
            "/api/auth/signup", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["accessToken"]
        return token

    def _log_websocket(self, socket: WebSocket) -> None:
        self.requests.append(socket.url)
        socket.on("framereceived", lambda payload: self.ws_frames.append(payload))

    async def page(self, browser: Browser, viewport: dict[str, int] = LAPTOP) -> Page:
        """A fresh browser context (no shared storage) with its requests logged."""
        context: BrowserContext = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        self.contexts.append(context)
        page = await context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda socket: self._log_websocket(socket))
        page.on("pageerror", lambda error: self.requests.append(f"pageerror: {error}"))
        return page


async def start_shop(stores: StoreUrls, tmp_path: Path, **env: str) -> AsyncIterator[Shop]:
    async with running_serve(
        stores, tmp_path, ADMIN_EMAIL, STOCK_BROADCAST_INTERVAL_MS="50", DROPS_CACHE_MS="0", **env
    ) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            login = await http.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            shop = Shop(url, http, login.json()["accessToken"])
            try:
                yield shop
            finally:
                # Pages go before the server does: a server stopping under open sockets
                # is another test's subject.
                for context in shop.contexts:
                    await context.close()
    errors = [r for r in shop.requests if r.startswith("pageerror")]
    assert errors == [], errors


@pytest.fixture
async def shop(stores: StoreUrls, tmp_path: Path) -> AsyncIterator[Shop]:
    async for running in start_shop(stores, tmp_path):
        yield running


async def sign_up(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.get_by_text("Signed in as").wait_for()
    # The greeting lands above the drops and moves them down: click nothing before it.
    await page.locator("#message", has_text="Welcome").wait_for()


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Signed in as").wait_for()


async def screenshot(page: Page, name: str) -> None:
    """<SHOTS>/<name>.png, made by the tests so the pictures show the pages as they are."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
