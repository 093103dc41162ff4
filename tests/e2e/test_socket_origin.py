"""A browser's Socket.IO session on `serve`'s default workers: every request carries an
`Origin`, which Engine.IO checks against the `Host` the request was sent to.

Each request of a session may reach any worker; one that is not the session's owner
forwards it there (app/realtime/socket_proxy.py). The forwarded request must keep the
browser's `Host`, or the owner sees a foreign origin and refuses it (403): a browser's
upgrade to WebSocket then fails about half the time, and it stays on long-polling.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support.serve import running_serve
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(120)

FORWARDED = re.compile(
    r'^sneakerdrop_socketio_forwarded_total\{outcome="[a-z_]+",transport="websocket"\}\s+([0-9.e+]+)$',
    re.MULTILINE,
)
WANTED_FORWARDS = 5  # upgrades that reached the other worker: the path under test
MOST_SESSIONS = 300  # new connections are spread unevenly over the workers


async def _browser_session(url: str) -> bool:
    """A session as a browser makes it (polling handshake, connect, then the upgrade),
    each request on a new connection, every one with the page's Origin. True when the
    WebSocket probe came back."""
    headers = {"Origin": url}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        async with http.get(f"{url}/socket.io/?EIO=4&transport=polling", headers=headers) as r:
            assert r.status == 200, await r.text()
            sid = orjson.loads((await r.text())[1:])["sid"]
        async with http.post(
            f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}", data=b"40", headers=headers
        ) as r:
            assert r.status == 200, await r.text()
        ws_url = url.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
        try:
            async with http.ws_connect(ws_url, headers=headers) as ws:
                await ws.send_str("2probe")
                reply = await ws.receive(timeout=5)
                return bool(reply.data == "3probe")
        except aiohttp.WSServerHandshakeError:
            return False


async def _forwarded_upgrades(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        text = await r.text()
    return int(sum(float(count) for count in FORWARDED.findall(text)))


async def test_every_browser_session_upgrades_to_websocket_on_the_default_workers(
    stores: StoreUrls, tmp_path: Path
) -> None:
    upgraded = sessions = 0
    async with running_serve(stores, tmp_path, "origin-admin@example.com") as url:
        while sessions < MOST_SESSIONS and await _forwarded_upgrades(url) < WANTED_FORWARDS:
            upgraded += await _browser_session(url)
            sessions += 1
        forwarded = await _forwarded_upgrades(url)
    assert forwarded >= WANTED_FORWARDS, f"only {forwarded} upgrades reached another worker"
    assert upgraded == sessions
