"""Locust: shoppers on a queue drop and entrants of a draw drop, against a running server.

A locustfile of its own (loadtests/locustfile.py's drop storm runs every user class of
its file): name the class to run.

- `QueueShopper`: joins the queue once (`POST /api/drops/{id}/queue`), then reads its
  ticket every `--poll-seconds` s (`GET /queue/me`); once admitted it reserves once
  (`POST /reserve`) and, with a hold, buys it (`--buy-share`) or lets it go. A ticket
  that reads `expired` or `closed` ends the shopper. Each poll is also counted under
  request type `ticket` by the status it read, so the report shows how many polls were
  waiting, admitted or closed.
- `DrawEntrant`: enters the draw once (`POST /entries`, with a size from the size curve
  and `--size-fallbacks` neighbours on a sized drop), then reads its entry every
  `--entry-poll-seconds` s until it is `won` (then buys the hold: `--buy-share`) or
  `lost`.

`QueueStorm` (the load shape) brings `--storm-users` shoppers in evenly over
`--storm-ramp` s (60: the minute before the start) and keeps them until
`--storm-seconds`. Fixtures (users with tokens and the drop) come from
`python -m loadtests.access_fixtures`, which makes a queue or draw drop:

    RATE_LIMITS=off .venv/bin/sneakerdrop serve --workers 2 &
    .venv/bin/python -m loadtests.access_fixtures --url http://127.0.0.1:4000 \\
        --access queue --users 5000 --starts-in 70 --admit-per-minute 600 \\
        --out loadtests/reports/locust-queue.json
    .venv/bin/locust -f loadtests/locust_access.py QueueShopper --headless \\
        --host http://127.0.0.1:4000 --fixtures loadtests/reports/locust-queue.json \\
        --storm-users 5000 --storm-ramp 60 --storm-seconds 120 \\
        --html loadtests/reports/locust-queue.html

    .venv/bin/python -m loadtests.access_fixtures --url http://127.0.0.1:4000 \\
        --access draw --users 2000 --closes-in 60 --sized --stock 300 \\
        --out loadtests/reports/locust-draw.json
    .venv/bin/locust -f loadtests/locust_access.py DrawEntrant --headless \\
        --host http://127.0.0.1:4000 --fixtures loadtests/reports/locust-draw.json \\
        --storm-users 2000 --storm-ramp 30 --storm-seconds 120
"""

from __future__ import annotations

import itertools
import json
import random
from functools import cache
from typing import Any

from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.exception import StopUser

from loadtests.size_curve import curve_for, size_request

_next_token = itertools.count()


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]  # locust
def _options(parser: Any) -> None:
    group = parser.add_argument_group("fair access")
    group.add_argument("--fixtures", default="", help="JSON from loadtests.access_fixtures")
    group.add_argument("--drop-id", default="", help="the drop (default: the fixtures')")
    group.add_argument("--storm-users", type=int, default=1000, help="users at the peak")
    group.add_argument("--storm-ramp", type=float, default=60.0, help="s to bring them all in")
    group.add_argument("--storm-seconds", type=float, default=120.0, help="s the run lasts")
    group.add_argument("--poll-seconds", type=float, default=2.0, help="ticket read period")
    group.add_argument("--entry-poll-seconds", type=float, default=5.0, help="entry read period")
    group.add_argument("--buy-share", type=float, default=0.5, help="of the holds, bought")
    group.add_argument("--size-fallbacks", type=int, default=2, help="sized draw: neighbours")


@cache
def fixtures(path: str) -> dict[str, Any]:
    if not path:
        return {}
    with open(path) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def count_status(environment: Environment, kind: str, status: str, seconds: float) -> None:
    """One `ticket` (or `entry`) entry per read, named by the status it read."""
    environment.events.request.fire(  # type: ignore[no-untyped-call]  # locust
        request_type=kind,
        name=f"{kind} -> {status}",
        response_time=seconds * 1000,
        response_length=0,
        exception=None,
        context={},
    )


class _Signed(FastHttpUser):
    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        loaded = fixtures(options.fixtures)
        tokens = loaded.get("tokens") or []
        if not tokens:
            raise RuntimeError("--fixtures from loadtests.access_fixtures are required")
        self.headers = {"Authorization": f"Bearer {tokens[next(_next_token) % len(tokens)]}"}
        self.drop_id: str = options.drop_id or loaded["dropId"]

    def buy(self, reservation_id: str) -> None:
        if random.random() < self.environment.parsed_options.buy_share:
            self.client.post(
                f"/api/reservations/{reservation_id}/purchase",
                headers=self.headers,
                name="/api/reservations/[id]/purchase",
            )


class QueueShopper(_Signed):
    """Join, read the ticket every `--poll-seconds`, reserve once admitted."""

    def wait_time(self) -> float:
        return float(self.environment.parsed_options.poll_seconds)

    def on_start(self) -> None:
        super().on_start()
        with self.client.post(
            f"/api/drops/{self.drop_id}/queue",
            headers=self.headers,
            name="/api/drops/[id]/queue",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 201):
                response.success()
            else:
                response.failure(f"join {response.status_code}")
                raise StopUser()

    @task
    def poll(self) -> None:
        with self.client.get(
            f"/api/drops/{self.drop_id}/queue/me",
            headers=self.headers,
            name="/api/drops/[id]/queue/me",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"ticket {response.status_code}")
                return
            status = response.json()["status"]
            count_status(
                self.environment, "ticket", status, response.request_meta["response_time"] / 1000
            )
        if status == "admitted":
            self.reserve()
            raise StopUser()
        if status in ("expired", "closed"):
            raise StopUser()

    def reserve(self) -> None:
        with self.client.post(
            f"/api/drops/{self.drop_id}/reserve",
            headers=self.headers,
            name="/api/drops/[id]/reserve (admitted)",
            catch_response=True,
        ) as response:
            if response.status_code == 201:
                response.success()
                self.buy(response.json()["id"])
            elif response.status_code == 409:
                response.success()  # sold out, or a size gone: an answer a drop expects
            else:
                response.failure(f"reserve {response.status_code}")


class DrawEntrant(_Signed):
    """Enter once, read the entry until it is decided, buy when it won."""

    def wait_time(self) -> float:
        return float(self.environment.parsed_options.entry_poll_seconds)

    def on_start(self) -> None:
        super().on_start()
        drop = self.client.get(f"/api/drops/{self.drop_id}", name="/api/drops/[id]").json()
        labels = [s["size"] for s in drop.get("sizes") or []]
        body: dict[str, Any] = {}
        if labels:
            fallbacks = self.environment.parsed_options.size_fallbacks
            size, others = size_request(random.Random(), fallbacks, curve_for(labels))
            body = {"size": size, "fallbackSizes": others}
        with self.client.post(
            f"/api/drops/{self.drop_id}/entries",
            headers=self.headers,
            json=body,
            name="/api/drops/[id]/entries",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 201):
                response.success()
            else:
                response.failure(f"entry {response.status_code}")
                raise StopUser()

    @task
    def poll(self) -> None:
        with self.client.get(
            f"/api/drops/{self.drop_id}/entries/me",
            headers=self.headers,
            name="/api/drops/[id]/entries/me",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"entry {response.status_code}")
                return
            entry = response.json()
            count_status(
                self.environment,
                "entry",
                entry["status"],
                response.request_meta["response_time"] / 1000,
            )
        if entry["status"] == "won":
            self.buy(entry["reservationId"])
            raise StopUser()
        if entry["status"] == "lost":
            raise StopUser()


class QueueStorm(LoadTestShape):
    """Everyone arrives evenly over the ramp (the minute before the start), then stays."""

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner else None
        users = options.storm_users if options else 1000
        ramp = options.storm_ramp if options else 60.0
        seconds = options.storm_seconds if options else 120.0
        if self.get_run_time() > seconds:  # type: ignore[no-untyped-call]  # locust
            return None
        return users, max(1.0, users / max(ramp, 0.1))
