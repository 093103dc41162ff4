"""The expiry benchmark's first phase: holds taken at a steady rate, through HTTP or the store.

Their `expiresAt` spread evenly over the same span one TTL later; sending stops a
margin before the first of them, so afterwards only expiry moves the stock.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.store import keys
from app.store.holds import ReserveOutcome
from loadtests.expiry_watch import iso_ms, summary
from loadtests.fixtures import auth
from loadtests.pacing import open_loop


@dataclass
class ReservePhase:
    via: str
    requested: int
    ok: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # not sent: the first hold was about to expire
    first_expires_ms: int | None = None
    started: float = 0.0
    last_sent: float = 0.0
    behind_s: list[float] = field(default_factory=list)  # how late each send left
    response_ms: list[float] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        span = self.last_sent - self.started
        return {
            "via": self.via,
            "requested": self.requested,
            "ok": self.ok,
            "refused": dict(self.refused),
            "skipped": self.skipped,
            "send_seconds": round(span, 2),
            "rate_per_second": round((self.ok + sum(self.refused.values())) / span, 1)
            if span > 0
            else None,
            "behind_schedule_ms": summary(x * 1000 for x in self.behind_s),
            "response_ms": summary(self.response_ms),
        }


class Reserver:
    """One reserve, by HTTP or by the app's HoldStore, recording its outcome."""

    def __init__(self, phase: ReservePhase) -> None:
        self.phase = phase

    def accepted(self, expires_ms: int) -> None:
        self.phase.ok += 1
        first = self.phase.first_expires_ms
        self.phase.first_expires_ms = expires_ms if first is None else min(first, expires_ms)

    async def one(self, index: int) -> None:
        raise NotImplementedError


class HttpReserver(Reserver):
    def __init__(
        self,
        phase: ReservePhase,
        http: aiohttp.ClientSession,
        url: str,
        drop_id: str,
        tokens: list[str],
    ) -> None:
        super().__init__(phase)
        self.http = http
        self.url = f"{url}/api/drops/{drop_id}/reserve"
        self.tokens = tokens

    async def one(self, index: int) -> None:
        sent = time.monotonic()
        try:
            async with self.http.post(self.url, headers=auth(self.tokens[index])) as response:
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.phase.refused[type(exc).__name__] += 1
            return
        self.phase.response_ms.append((time.monotonic() - sent) * 1000)
        if status == 201:
            self.accepted(iso_ms(body["expiresAt"]))
        else:
            self.phase.refused[str(body.get("code") or status)] += 1


class StoreReserver(Reserver):
    def __init__(
        self, phase: ReservePhase, holds: Any, drop_id: str, user_ids: list[str], ttl_ms: int
    ) -> None:
        super().__init__(phase)
        self.holds = holds
        self.drop_id = drop_id
        self.user_ids = user_ids
        self.ttl_ms = ttl_ms

    async def one(self, index: int) -> None:
        ref = keys.parse_hold_id(keys.new_hold_id(self.drop_id, self.user_ids[index]))
        assert ref is not None
        sent = time.monotonic()
        result = await self.holds.reserve(ref, self.ttl_ms)
        self.phase.response_ms.append((time.monotonic() - sent) * 1000)
        if result.outcome is ReserveOutcome.OK:
            self.accepted(result.expires_at_ms)
        else:
            self.phase.refused[result.outcome.value] += 1


async def reserve_steadily(
    reserver: Reserver,
    count: int,
    spread_s: float,
    concurrency: int,
    offset_ms: float,
    margin_s: float,
) -> None:
    """Send `count` reserves evenly over `spread_s`, at most `concurrency` in flight.

    Stops sending `margin_s` before the earliest expiresAt seen so far (converted from the
    Redis clock with `offset_ms`), so the stock moves by expiry alone afterwards.
    """
    phase = reserver.phase
    wall_minus_mono = time.time() - time.monotonic()

    def expiry_near() -> bool:
        first = phase.first_expires_ms
        if first is None:
            return False
        return time.monotonic() >= (first - offset_ms) / 1000 - wall_minus_mono - margin_s

    paced = await open_loop(
        reserver.one, count / spread_s, count=count, concurrency=concurrency, stop=expiry_near
    )
    phase.started, phase.last_sent, phase.behind_s = paced.started, paced.last_sent, paced.behind
    phase.skipped = count - paced.sent
