"""Fair access against a real `sneakerdrop serve` (default workers):

- `access_update` reaches the official JavaScript socket.io-client connected with
  `auth: {token}` within a second of each status change of its own ticket (admitted,
  expired) and with its draw result; nobody else's; an invalid, refresh or revoked
  token gets connect_error and a client without auth still connects;
- `sneakerdrop verify-order DROP_ID --url` verifies a real draw's record (exit 0), and a
  saved copy tampered with fails (exit 1).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.access import (
    AccessClient,
    draw_drop,
    fixed_record,
    parse_iso,
    queue_drop,
)
from tests.support.factories import PASSWORD, auth, signup
from tests.support.realtime_server import ROOT
from tests.support.serve import running_serve
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

ADMIN_EMAIL = "access-serve-admin@example.com"
PUSH_WITHIN_MS = 1000


async def _admin(http: httpx.AsyncClient) -> str:
    login = await http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token: str = login.json()["accessToken"]
    return token


def _ms(text: str) -> float:
    return parse_iso(text).timestamp() * 1000


async def _refused(url: str, token: str | None) -> dict[str, Any]:
    client = await AccessClient(url, token, seconds=15).start()
    try:
        return await client.next("connect_error")
    finally:
        await client.close()


@pytest.mark.slow
async def test_access_updates_reach_the_signed_in_javascript_client(
    stores: StoreUrls, tmp_path: Path
) -> None:
    async with (
        running_serve(stores, tmp_path, ADMIN_EMAIL) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        admin = await _admin(http)
        me, other = await signup(http), await signup(http)
        queue = await queue_drop(http, admin, starts_in=4, admit_per_minute=6000, pass_seconds=2)
        joined = await http.post(f"/api/drops/{queue['id']}/queue", headers=auth(me["accessToken"]))
        assert joined.status_code == 201, joined.text
        clients = [
            await AccessClient(url, me["accessToken"]).start(),
            await AccessClient(url, other["accessToken"]).start(),
            await AccessClient(url, None).start(),
        ]
        try:
            for client in clients:
                await client.next("connect", 15)
            mine = clients[0]
            admitted = await mine.next("access_update", 15, ticket__status="admitted")
            payload = admitted["payload"]
            assert payload["dropId"] == queue["id"]
            assert payload["kind"] == "queue"
            ticket = payload["ticket"]
            assert ticket["entryId"] == joined.json()["entryId"]
            assert ticket["position"] == 1
            shown = await http.get(
                f"/api/drops/{queue['id']}/queue/me", headers=auth(me["accessToken"])
            )
            assert shown.json() == ticket  # the same object as /me
            late_ms = admitted["at"] - _ms(ticket["admittedAt"])
            print(f"access_update admitted: {late_ms:.0f} ms after admittedAt")
            assert late_ms <= PUSH_WITHIN_MS, f"admitted pushed {late_ms:.0f} ms late"
            expired = await mine.next("access_update", 10, ticket__status="expired")
            late_ms = expired["at"] - _ms(expired["payload"]["ticket"]["passExpiresAt"])
            print(f"access_update expired: {late_ms:.0f} ms after passExpiresAt")
            assert late_ms <= PUSH_WITHIN_MS, f"expiry pushed {late_ms:.0f} ms late"

            draw = await draw_drop(http, admin, closes_in=1.5, totalStock=2)
            for user in (me, other):
                entered = await http.post(
                    f"/api/drops/{draw['id']}/entries", headers=auth(user["accessToken"])
                )
                assert entered.status_code == 201, entered.text
            for client, user in zip(clients[:2], (me, other), strict=True):
                won = await client.next("access_update", 10, kind="draw", entry__status="won")
                entry = won["payload"]["entry"]
                assert won["payload"]["dropId"] == draw["id"]
                assert entry["reservationId"]
                mine_now = await http.get(
                    f"/api/drops/{draw['id']}/entries/me", headers=auth(user["accessToken"])
                )
                assert mine_now.json() == entry
                late_ms = won["at"] - _ms(draw["draw"]["closesAt"])
                print(f"access_update won: {late_ms:.0f} ms after closesAt")
                assert late_ms <= 2000 + PUSH_WITHIN_MS, f"draw result {late_ms:.0f} ms late"
        finally:
            for client in clients:
                await client.close()
        # Nobody received another user's updates; the client without auth none at all.
        other_seen = [line["payload"] for line in clients[1].seen if "payload" in line]
        assert all(p.get("kind") == "draw" for p in other_seen), other_seen
        assert not [line for line in clients[2].seen if line["event"] == "access_update"]
        assert not [line for line in clients[0].seen if line["event"] == "connect_error"]

        for token in ("not-a-token", me["refreshToken"]):
            refused = await _refused(url, token)
            assert refused["data"]["code"] == "UNAUTHORIZED", refused
        out = await http.post(
            "/api/auth/logout",
            json={"refreshToken": other["refreshToken"]},
            headers=auth(other["accessToken"]),
        )
        assert out.status_code == 204, out.text
        refused = await _refused(url, other["accessToken"])
        assert refused["data"]["code"] == "UNAUTHORIZED", refused


async def _verify_order(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "verify-order",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_verify_order_checks_a_real_draw_and_fails_a_tampered_copy(
    stores: StoreUrls, tmp_path: Path
) -> None:
    async with (
        running_serve(stores, tmp_path, ADMIN_EMAIL) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
    ):
        admin = await _admin(http)
        draw = await draw_drop(http, admin, closes_in=1.5, totalStock=2)
        for _ in range(6):
            user = await signup(http)
            entered = await http.post(
                f"/api/drops/{draw['id']}/entries", headers=auth(user["accessToken"])
            )
            assert entered.status_code == 201, entered.text
        await fixed_record(http, draw["id"])
        saved = tmp_path / "record.json"
        code, out = await _verify_order(draw["id"], "--url", url, "--save", str(saved))
        assert code == 0, out
        assert f"drop {draw['id']}: 6 entries" in out
        assert "order verified" in out

    code, out = await _verify_order(draw["id"], "--file", str(saved))
    assert code == 0, out
    record = json.loads(saved.read_text())
    first, second = record["entries"][0], record["entries"][1]
    first["entryId"], second["entryId"] = second["entryId"], first["entryId"]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(record))
    code, out = await _verify_order(draw["id"], "--file", str(tampered))
    assert code == 1, out
    assert "order NOT verified" in out
