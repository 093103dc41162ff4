"""The soak's traffic: paced shoppers that browse, hold, buy, cancel and abandon; an admin.

A shopper repeats sessions until the deadline; each session is one user (picked at
random, so two shoppers sometimes act for the same user at once):

- browse: `GET /api/drops`, sometimes `GET /api/drops/{id}`;
- reserve one unit of a random drop (sometimes with an `Idempotency-Key`, replayed
  after the first answer or at the same time);
- with a hold, after a think time shorter than the hold: purchase it (on either
  route; sometimes repeated, sometimes with a replayed `Idempotency-Key`, sometimes
  twice at once, sometimes followed by a cancel that must be refused), cancel it
  (sometimes twice), race a purchase against a cancel, purchase it after its
  `expiresAt` (must be refused), or abandon it to expire;
- sometimes `GET /api/me/reservations` and `GET /api/me/purchases`.

Every request of a shopper waits for a slot of the shared `Pacer`, so the whole crowd
sends at most `--rate` requests per second. The admin restocks a random drop (not
the cancelled one) every `--restock-every` s and cancels one drop at `--cancel-drop-at`
of the run; its calls are not paced. Sleeps here are the shoppers' think times and the
admin's schedule: the behaviour being simulated, not synchronisation.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from loadtests import soak_tally as t
from loadtests.fixtures import User, auth
from loadtests.soak_tally import Answer, DropBook, Tally


@dataclass(frozen=True)
class Mix:
    """Probabilities of each step (the shares of a hold's fate add up to at most 1)."""

    browse: float = 0.5  # GET /api/drops first
    view: float = 0.3  # GET /api/drops/{id}
    my_holds: float = 0.3  # GET /api/me/reservations after the hold
    my_purchases: float = 0.05
    reserve_key: float = 0.08  # reserve with an Idempotency-Key, replayed
    # A hold's fate; the rest is abandoned (it expires).
    purchase: float = 0.3
    cancel: float = 0.2
    race: float = 0.04  # a purchase and a cancel at once
    late: float = 0.04  # a purchase after expiresAt
    # Of purchases:
    repeat: float = 0.15  # bought again once answered
    purchase_key: float = 0.15  # with an Idempotency-Key, replayed
    pair: float = 0.05  # two at once
    cancel_bought: float = 0.1  # a cancel after the purchase
    cancel_twice: float = 0.2  # of cancels


class Pacer:
    """Start slots `1 / rate` s apart, shared by every shopper (rate <= 0: no pacing).

    A slot missed (everyone was busy) is not made up later: no catch-up bursts.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    def claim(self, now: float) -> float:
        """The start time of the next slot, from `now`; the slot is then taken."""
        start = max(self.next, now)
        self.next = start + self.interval
        return start

    async def slot(self) -> None:
        if not self.interval:
            return
        now = asyncio.get_running_loop().time()
        start = self.claim(now)
        if start > now:
            await asyncio.sleep(start - now)


class Client:
    """Sends one request, counts its answer in the tally."""

    def __init__(self, http: aiohttp.ClientSession, url: str, tally: Tally, pacer: Pacer) -> None:
        self.http = http
        self.url = url
        self.tally = tally
        self.pacer = pacer

    async def call(
        self,
        route: str,
        method: str,
        path: str,
        token: str | None = None,
        *,
        key: str | None = None,
        body: dict[str, Any] | None = None,
        paced: bool = True,
    ) -> Answer:
        if paced:
            await self.pacer.slot()
        headers = auth(token) if token else {}
        if key:
            headers["Idempotency-Key"] = key
        raw = b""
        started = time.perf_counter_ns()
        try:
            async with self.http.request(
                method, self.url + path, headers=headers, json=body
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            answer = Answer(0, type(exc).__name__)
            self.tally.record(route, answer, time.perf_counter_ns() - started, str(exc).encode())
            return answer
        latency = time.perf_counter_ns() - started
        parsed = _json(raw)
        code = parsed.get("code") if status >= 400 and isinstance(parsed, dict) else None
        answer = Answer(status, code if isinstance(code, str) else None, parsed)
        self.tally.record(route, answer, latency, raw)
        return answer


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Shopper:
    def __init__(
        self,
        client: Client,
        users: Sequence[User],
        books: dict[str, DropBook],
        mix: Mix,
        rng: random.Random,
        hold_seconds: float,
    ) -> None:
        self.client = client
        self.tally = client.tally
        self.users = users
        self.books = books
        self.drop_ids = list(books)
        self.mix = mix
        self.rng = rng
        self.hold_seconds = hold_seconds

    async def run(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            await self.session()

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    async def session(self) -> None:
        user = self.rng.choice(self.users)
        drop_id = self.rng.choice(self.drop_ids)
        call = self.client.call
        if self.chance(self.mix.browse):
            await call(t.LIST, "GET", "/api/drops")
        if self.chance(self.mix.view):
            await call(t.DROP, "GET", f"/api/drops/{drop_id}")
        held = await self.reserve(user.token, drop_id)
        if held is not None:
            await self.settle(user.token, drop_id, held)
        if self.chance(self.mix.my_holds):
            await call(t.MY_HOLDS, "GET", "/api/me/reservations", user.token)
        if self.chance(self.mix.my_purchases):
            await call(t.MY_PURCHASES, "GET", "/api/me/purchases", user.token)

    async def reserve(self, token: str, drop_id: str) -> Answer | None:
        call, path = self.client.call, f"/api/drops/{drop_id}/reserve"
        if not self.chance(self.mix.reserve_key):
            first = await call(t.RESERVE, "POST", path, token)
        else:
            key = secrets.token_hex(12)
            if self.chance(0.3):  # the replay arrives while the first still runs
                first, replay = await asyncio.gather(
                    call(t.RESERVE, "POST", path, token, key=key),
                    call(t.RESERVE_REPLAY, "POST", path, token, key=key),
                )
            else:
                first = await call(t.RESERVE, "POST", path, token, key=key)
                replay = await call(t.RESERVE_REPLAY, "POST", path, token, key=key)
            self.tally.anomaly(t.replay_problem(first, replay))
            self.tally.event("reserve replays")
        if first.status != 201 or not isinstance(first.field("id"), str):
            return None
        self.tally.event("held")
        return first

    async def settle(self, token: str, drop_id: str, held: Answer) -> None:
        """The hold's fate: bought, cancelled, raced, bought too late, or abandoned."""
        reservation_id: str = held.field("id")
        mix, r = self.mix, self.rng.random()
        if r < mix.purchase:
            await self.think()
            await self.purchase(token, drop_id, reservation_id)
        elif r < mix.purchase + mix.cancel:
            await self.think()
            await self.cancel(token, reservation_id)
        elif r < mix.purchase + mix.cancel + mix.race:
            await self.race(token, drop_id, reservation_id)
        elif r < mix.purchase + mix.cancel + mix.race + mix.late:
            await self.late(token, drop_id, reservation_id, held.field("expiresAt"))
        else:
            self.tally.event("abandoned")

    async def think(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.4 * self.hold_seconds))

    def purchase_path(self, reservation_id: str) -> str:
        if self.chance(0.5):
            return f"/api/reservations/{reservation_id}/purchase"
        return f"/api/drops/{reservation_id}/purchase"  # the original route

    async def purchase(self, token: str, drop_id: str, reservation_id: str) -> None:
        call, mix, r = self.client.call, self.mix, self.rng.random()
        path = self.purchase_path(reservation_id)
        if r < mix.pair:
            a, b = await asyncio.gather(
                call(t.PURCHASE_PAIR, "POST", path, token),
                call(t.PURCHASE_PAIR, "POST", self.purchase_path(reservation_id), token),
            )
            self.tally.anomaly(t.pair_problem(a, b))
            answers = [a, b]
        elif r < mix.pair + mix.purchase_key:
            key = secrets.token_hex(12)
            first = await call(t.PURCHASE, "POST", path, token, key=key)
            replay = await call(t.PURCHASE_REPLAY, "POST", path, token, key=key)
            self.tally.anomaly(t.replay_problem(first, replay))
            answers = [first, replay]
        else:
            first = await call(t.PURCHASE, "POST", path, token)
            answers = [first]
            if self.chance(mix.repeat):
                again = await call(
                    t.PURCHASE_REPEAT, "POST", self.purchase_path(reservation_id), token
                )
                self.tally.anomaly(t.repeat_problem(first, again))
                answers.append(again)
        if self.book_purchase(drop_id, answers) and self.chance(mix.cancel_bought):
            refused = await call(
                t.CANCEL_BOUGHT, "DELETE", f"/api/reservations/{reservation_id}", token
            )
            if refused.status == 204:
                self.tally.anomaly(f"purchased hold {reservation_id} cancelled afterwards (204)")

    def book_purchase(self, drop_id: str, answers: Sequence[Answer]) -> bool:
        """Enter the purchase the answers acknowledge; True when the hold was bought."""
        book = self.books[drop_id]
        ids = {a.field("id") for a in answers if a.ok and isinstance(a.field("id"), str)}
        book.purchases |= ids
        if ids:
            self.tally.event("bought")
        elif any(a.status == 0 or a.status >= 500 for a in answers):
            book.purchase_unknown += 1
        else:
            self.tally.event("refused")
        return bool(ids)

    async def cancel(self, token: str, reservation_id: str) -> None:
        path = f"/api/reservations/{reservation_id}"
        first = await self.client.call(t.CANCEL, "DELETE", path, token)
        if first.status == 204:
            self.tally.event("cancelled")
        if first.status == 204 and self.chance(self.mix.cancel_twice):
            again = await self.client.call(t.CANCEL, "DELETE", path, token)
            if 0 < again.status < 500 and again.status != 204:
                self.tally.anomaly(f"second cancel of {reservation_id}: {again.status}")

    async def race(self, token: str, drop_id: str, reservation_id: str) -> None:
        bought, cancelled = await asyncio.gather(
            self.client.call(t.PURCHASE_RACE, "POST", self.purchase_path(reservation_id), token),
            self.client.call(t.CANCEL_RACE, "DELETE", f"/api/reservations/{reservation_id}", token),
        )
        self.tally.anomaly(t.race_problem(bought, cancelled))
        self.book_purchase(drop_id, [bought])
        self.tally.event("raced")

    async def late(self, token: str, drop_id: str, reservation_id: str, expires_at: Any) -> None:
        try:
            deadline = datetime.fromisoformat(str(expires_at))
        except ValueError:
            self.tally.anomaly(f"hold {reservation_id}: expiresAt {expires_at!r} is not a time")
            return
        past = self.rng.uniform(0.3, 1.0)
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds() + past))
        sent = datetime.now(UTC)
        late = await self.client.call(
            t.PURCHASE_LATE, "POST", self.purchase_path(reservation_id), token
        )
        self.tally.anomaly(t.late_problem(late, (sent - deadline).total_seconds()))
        self.book_purchase(drop_id, [late])
        self.tally.event("late")


class Admin:
    """Restocks and the cancellation of one drop, on the run's clock."""

    def __init__(
        self, client: Client, token: str, books: dict[str, DropBook], rng: random.Random
    ) -> None:
        self.client = client
        self.token = token
        self.books = books
        self.rng = rng

    async def restocks(self, every: float, low: int, high: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while every > 0 and loop.time() + every < deadline:
            await asyncio.sleep(every)
            open_books = [b for b in self.books.values() if not b.cancelled]
            if not open_books:
                return
            book = self.rng.choice(open_books)
            quantity = self.rng.randint(low, high)
            answer = await self.client.call(
                t.RESTOCK,
                "POST",
                f"/api/drops/{book.drop_id}/restock",
                self.token,
                body={"quantity": quantity},
                paced=False,
            )
            if answer.ok:
                book.restocked += quantity
                self.client.tally.event("restocks")
            elif answer.status == 0 or answer.status >= 500:
                book.restock_unknown += quantity

    async def cancel_drop(self, book: DropBook, delay: float) -> None:
        await asyncio.sleep(delay)
        book.cancelled = True  # no restock of it from now on
        answer = await self.client.call(
            t.CANCEL_DROP,
            "PATCH",
            f"/api/drops/{book.drop_id}",
            self.token,
            body={"status": "cancelled"},
            paced=False,
        )
        if answer.ok:
            self.client.tally.event("drops cancelled")
