"""Socket.IO across hosts: the official JS client through HAProxy to three API hosts.

HAProxy balances each request (leastconn), so a session's polls and its upgrade reach
any host; each host hands them to the host holding the session, at the address it
registered (SOCKET_FORWARD_HOST, by default HOST: its namespace address).
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.js import node_clients
from tests.rig.traffic import admin_drop
from tests.support.rig import SECRETS, Rig

pytestmark = [pytest.mark.rig, pytest.mark.timeout(240)]

CROWD = 50  # official JS clients per mode
MODES = ("default", "polling", "websocket")
_FORWARDED = re.compile(r"^sneakerdrop_socketio_forwarded_total\{([^}]*)\}\s+([0-9.e+]+)$", re.M)


async def _forwarded(rig: Rig) -> float:
    """Requests handed to another host, every host added up (ok outcomes)."""
    total = 0.0
    headers = {"Authorization": f"Bearer {SECRETS['METRICS_TOKEN']}"}
    for host in rig.hosts:
        async with httpx.AsyncClient(base_url=host.url, timeout=10) as http:
            text = (await http.get("/metrics", headers=headers)).text
        total += sum(float(v) for labels, v in _FORWARDED.findall(text) if '"ok"' in labels)
    return total


async def test_official_js_clients_connect_through_the_balancer_in_every_mode(rig: Rig) -> None:
    node_clients.install()
    async with httpx.AsyncClient(base_url=rig.lb_url, timeout=10) as lb:
        await admin_drop(lb, totalStock=5)
        storefront = len((await lb.get("/api/drops")).json())
    before = await _forwarded(rig)
    results = {
        mode: await node_clients.run_clients(rig.lb_url, CROWD, mode, storefront) for mode in MODES
    }
    crossed = await _forwarded(rig) - before
    print({m: {k: r[k] for k in ("ok", "errors", "transports")} for m, r in results.items()})
    print(f"rig figure: Socket.IO requests handed to another host = {crossed:.0f}")
    for mode, result in results.items():
        assert result["ok"] == CROWD, (mode, result)
    assert crossed > 0, "no request crossed hosts: the test did not exercise routing"
