"""Locust: a drop storm against a running sneakerdrop (`sneakerdrop serve`).

Each simulated shopper gets its session once: a pre-minted access token from
`--fixtures` (made by `python -m loadtests.fixtures`, so bcrypt is not what is
measured), or else it signs up once (the server then needs RATE_LIMITS=off: signup is
limited per IP). Then it loops: browse the drops now and then, reserve on the storm
drop, and with a unit held buy it (`--buy-share`), cancel it (`--cancel-share`) or
let it expire; a shopper who bought only browses from then on. Refusals (409
SOLD_OUT, SIZE_SOLD_OUT, LIMIT_REACHED, DROP_NOT_LIVE, COOLDOWN) are answers a storm
expects, not failures; every reserve is also counted under request type `outcome` by
its result, so the report shows how many of each there were and how long each took.

On a drop with sizes (`fixtures --sized`, or any drop whose `sizes` are not empty) each
shopper has one size, drawn once from loadtests/size_curve.py's curve over the drop's
labels (most shoppers in US 8-11; an even draw for labels outside that run), and asks
for it with `--size-fallbacks` neighbouring sizes as `fallbackSizes`. A hold is
counted as `reserve -> 201` when it is the size asked first and `reserve -> 201
fallback` when a fallback was held.

`DropStorm` is the load shape: `--storm-users` shoppers within `--storm-ramp` s of the
start, all of them until `--storm-seconds`, then stop. Once the units are gone the
storm is sold-out hammering: every reserve is a 409, and holds come back only as they
are cancelled or expire.

Headless, with the HTML report (loadtests/reports/ is git-ignored). The server and
`fixtures` must share DATABASE_URL and JWT_ACCESS_SECRET; a short hold time lets some
holds expire within the run:

    RESERVATION_TTL_SECONDS=15 RATE_LIMITS=off .venv/bin/sneakerdrop serve --workers 2 &
    .venv/bin/python -m loadtests.fixtures --url http://127.0.0.1:4000 --users 2000 \\
        --stock 300 --out loadtests/reports/locust-fixtures.json
    .venv/bin/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:4000 \\
        --fixtures loadtests/reports/locust-fixtures.json \\
        --storm-users 500 --storm-ramp 5 --storm-seconds 60 \\
        --html loadtests/reports/locust-storm.html --csv loadtests/reports/locust-storm

A sized drop: `fixtures ... --sized`, then the same locust command (with
`--size-fallbacks N`, 0 to 5, to change how many neighbouring sizes shoppers accept).
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
from functools import cache
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment

from loadtests.size_curve import curve_for, size_request

EXPECTED_REFUSALS = {"SOLD_OUT", "SIZE_SOLD_OUT", "LIMIT_REACHED", "DROP_NOT_LIVE", "COOLDOWN"}
_next_token = itertools.count()


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust
def _options(parser: Any) -> None:
    group = parser.add_argument_group("drop storm")
    group.add_argument("--fixtures", default="", help="JSON from `python -m loadtests.fixtures`")
    group.add_argument("--drop-id", default="", help="the storm drop (default: the fixtures')")
    group.add_argument("--storm-users", type=int, default=200, help="shoppers at the peak")
    group.add_argument("--storm-ramp", type=float, default=5.0, help="s to reach the peak")
    group.add_argument("--storm-seconds", type=float, default=60.0, help="s the storm lasts")
    group.add_argument("--buy-share", type=float, default=0.5, help="of the holds, bought")
    group.add_argument("--cancel-share", type=float, default=0.2, help="of the holds, cancelled")
    group.add_argument(
        "--size-fallbacks", type=int, default=2, help="sized drop: neighbouring sizes accepted"
    )


@cache
def fixtures(path: str) -> dict[str, Any]:
    if not path:
        return {}
    with open(path) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def count_outcome(environment: Environment, result: str, seconds: float, size: int) -> None:
    """One `outcome` entry per reserve, named by its result: counts and times per result."""
    environment.events.request.fire(  # type: ignore[no-untyped-call]  # locust
        request_type="outcome",
        name=f"reserve -> {result}",
        response_time=seconds * 1000,
        response_length=size,
        exception=None,
        context={},
    )


class Shopper(FastHttpUser):
    wait_time = between(0.05, 0.5)  # a storm: shoppers press again at once

    def on_start(self) -> None:
        options = self.environment.parsed_options
        loaded = fixtures(options.fixtures)
        if loaded.get("tokens"):
            tokens = loaded["tokens"]
            token = tokens[next(_next_token) % len(tokens)]
        else:
            token = self.sign_up()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.drop_id: str = options.drop_id or loaded.get("dropId") or self.first_live_drop()
        self.bought = False  # a shopper who got the pair only browses from then on
        self.asked = self.sizes_asked(options.size_fallbacks)

    def sizes_asked(self, fallbacks: int) -> dict[str, Any] | None:
        """The reserve body of this shopper (their size, then neighbours), on a sized drop."""
        drop = self.client.get(f"/api/drops/{self.drop_id}", name="/api/drops/[id]").json()
        labels = [s["size"] for s in drop.get("sizes") or []]
        if not labels:
            return None
        size, others = size_request(random.Random(), fallbacks, curve_for(labels))
        return {"size": size, "fallbackSizes": others}

    def sign_up(self) -> str:
        body = {"email": f"shopper-{secrets.token_hex(6)}@example.com", "password": "storm-pass-1"}
        with self.client.post("/api/auth/signup", json=body, catch_response=True) as response:
            if response.status_code != 201:
                response.failure(f"signup {response.status_code}")
                raise RuntimeError("signup failed")
            token: str = response.json()["accessToken"]
            return token

    def first_live_drop(self) -> str:
        drops = self.client.get("/api/drops?status=live").json()
        if not drops:
            raise RuntimeError("no live drop: pass --drop-id or --fixtures")
        drop_id: str = drops[0]["id"]
        return drop_id

    @task(1)
    def browse(self) -> None:
        self.client.get("/api/drops")
        self.client.get(f"/api/drops/{self.drop_id}", name="/api/drops/[id]")

    @task(6)
    def reserve(self) -> None:
        if self.bought:
            self.browse()
            return
        with self.client.post(
            f"/api/drops/{self.drop_id}/reserve",
            headers=self.headers,
            json=self.asked,
            name="/api/drops/[id]/reserve",
            catch_response=True,
        ) as response:
            seconds = response.request_meta["response_time"] / 1000
            if response.status_code == 201:
                response.success()
                held = response.json()
                fallback = self.asked is not None and held["size"] != self.asked["size"]
                result = "201 fallback" if fallback else "201"
                count_outcome(self.environment, result, seconds, len(response.content or b""))
                self.after_hold(held["id"])
                return
            code = (response.json() or {}).get("code", "") if response.content else ""
            if response.status_code == 409 and code in EXPECTED_REFUSALS:
                response.success()
            else:
                response.failure(f"{response.status_code} {code}")
            count_outcome(
                self.environment, code or str(response.status_code), seconds, len(response.content)
            )

    def after_hold(self, reservation_id: str) -> None:
        """Buy it, cancel it, or walk away and let it expire."""
        options = self.environment.parsed_options
        roll = random.random()
        if roll < options.buy_share:
            response = self.client.post(
                f"/api/reservations/{reservation_id}/purchase",
                headers=self.headers,
                name="/api/reservations/[id]/purchase",
            )
            self.bought = response.status_code in (200, 201)
        elif roll < options.buy_share + options.cancel_share:
            self.client.delete(
                f"/api/reservations/{reservation_id}",
                headers=self.headers,
                name="/api/reservations/[id]",
            )


class DropStorm(LoadTestShape):
    """Everyone arrives within seconds of the start, then keeps hammering until the end."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        users = options.storm_users if options else 200
        ramp = options.storm_ramp if options else 5.0
        seconds = options.storm_seconds if options else 60.0
        if self.get_run_time() > seconds:  # type: ignore[no-untyped-call]  # locust
            return None
        return users, max(1.0, users / max(ramp, 0.1))
