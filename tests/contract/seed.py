"""Real objects for the schema-driven tests to hit, made through the public API.

Generated path ids are almost never real, so every id-taking operation would only
ever see 404. `Seeds.aim` swaps a generated id for a seeded one for a fixed share of
cases, chosen by a hash of the generated value: the same case always gets the same
seeded object, so Hypothesis can replay and shrink a failure.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from schemathesis import Case

ADMIN_EMAIL = "contract-admin@example.com"
PASSWORD = "correct-horse-battery"
UNKNOWN_DROP = "0123456789abcdef"  # well formed, never created: reaches the store look-ups
UNKNOWN_RESERVATION = f"{UNKNOWN_DROP}.fedcba9876543210.00112233aabbccdd"


@dataclass
class Seeds:
    tokens: dict[str, str]  # role -> access token
    drop_ids: list[str] = field(default_factory=list)
    reservation_ids: list[str] = field(default_factory=list)

    def headers(self, role: str) -> dict[str, str]:
        """The role's Authorization header; none for a role without a token (anonymous)."""
        token = self.tokens.get(role)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def aim(self, case: Case) -> Case:
        """The case with about three ids in four swapped for a seeded (or well-formed
        unknown) one. A copy: coverage cases are shared by every run of an operation."""
        pools = {
            "drop_id": [*self.drop_ids, UNKNOWN_DROP],
            "reservation_id": [*self.reservation_ids, UNKNOWN_RESERVATION],
        }
        swaps = {}
        for name, value in (case.path_parameters or {}).items():
            pool = pools.get(name)
            pick = zlib.crc32(repr(value).encode())
            if pool is not None and pick % 4:
                swaps[name] = pool[pick // 4 % len(pool)]
        if not swaps:
            return case
        aimed = case.derive(keep_auth=True)
        aimed.path_parameters.update(swaps)
        return aimed


@dataclass(frozen=True)
class LiveApi:
    url: str
    seeds: Seeds


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def seed(url: str) -> Seeds:
    """An admin and a customer; live, scheduled, ended, cancelled and sold-out drops;
    for each account an active, a purchased and a cancelled hold."""
    now = datetime.now(UTC)
    with httpx.Client(base_url=url, timeout=10) as http:
        admin = _ok(
            http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}), 200
        )
        customer = _ok(
            http.post(
                "/api/auth/signup",
                json={"email": "contract-user@example.com", "password": PASSWORD},
            ),
            201,
        )
        seeds = Seeds({"admin": admin["accessToken"], "customer": customer["accessToken"]})
        admin_auth = seeds.headers("admin")

        def drop(**fields: Any) -> str:
            body = {"name": "Contract Runner", "priceCents": 15000, "totalStock": 50, **fields}
            created = _ok(http.post("/api/drops", json=body, headers=admin_auth), 201)
            drop_id: str = created["id"]
            seeds.drop_ids.append(drop_id)
            return drop_id

        live = drop(perUserLimit=5)
        drop(startsAt=_iso(now + timedelta(hours=1)))
        drop(startsAt=_iso(now - timedelta(hours=2)), endsAt=_iso(now - timedelta(hours=1)))
        cancelled = drop()
        _ok(
            http.patch(f"/api/drops/{cancelled}", json={"status": "cancelled"}, headers=admin_auth),
            200,
        )
        sold_out = drop(totalStock=1)

        for role in ("admin", "customer"):
            caller = seeds.headers(role)

            def hold(drop_id: str, caller: dict[str, str] = caller) -> str:
                held = _ok(http.post(f"/api/drops/{drop_id}/reserve", headers=caller), 201)
                reservation_id: str = held["id"]
                seeds.reservation_ids.append(reservation_id)
                return reservation_id

            hold(live)
            bought = hold(live)
            _ok(http.post(f"/api/reservations/{bought}/purchase", headers=caller), 201)
            dropped = hold(live)
            _ok(http.delete(f"/api/reservations/{dropped}", headers=caller), 204)
        sold = _ok(http.post(f"/api/drops/{sold_out}/reserve", headers=admin_auth), 201)["id"]
        _ok(http.post(f"/api/reservations/{sold}/purchase", headers=admin_auth), 201)
        seeds.reservation_ids.append(sold)
    return seeds
