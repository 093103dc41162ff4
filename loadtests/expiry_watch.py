"""What the expiry benchmark watches: the stock coming back, on the Redis clock.

The k-th unit back in stock is paired with the k-th `expiresAt` (`stock_lags`); the
polls, the snapshot of the live holds, the timer keys' `expired` events and
release.lua's own records of each ended hold are read here, beside the server, on a
Redis connection of the benchmark's own. Pure parts are checked without a server
(loadtests/tests/test_expiry_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, cast

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.store.keys import DropKeys
from loadtests.stats import Summary


def summary(values: Iterable[float]) -> dict[str, Any] | None:
    """`Summary` of the values as the report's JSON keeps it (mean to 0.1)."""
    found = Summary.of(values)
    if found is None:
        return None
    return {**asdict(found), "mean": round(found.mean, 1)}


@dataclass(frozen=True, slots=True)
class UnitBack:
    """The k-th unit back in stock, paired with the k-th expiresAt (all Redis ms)."""

    expires_ms: int
    seen_ms: int  # the first poll that showed it back
    before_ms: int  # the poll before, which did not (expires_ms when there was none)

    @property
    def lag_ms(self) -> int:
        """Upper bound of the lag: the unit was back by `seen_ms`."""
        return self.seen_ms - self.expires_ms

    @property
    def lag_floor_ms(self) -> int:
        """Lower bound: it came back after `before_ms`, and never before its expiry."""
        return max(self.before_ms - self.expires_ms, 0)


def stock_lags(
    expires_ms: Iterable[int], samples: Iterable[tuple[int, int]], base: int
) -> tuple[list[UnitBack], int]:
    """Pair the k-th unit back with the k-th expiry; returns the pairs and the units never seen.

    `samples` are (Redis time in ms, available stock) polls in time order; `base` is the
    stock before the first expiry. While only expiry moves the stock, the unit that lifts
    it to `base + k` is the k-th one back, whichever hold it came from, so lag_k measures
    how far the stock curve trails the expiry curve.
    """
    ordered = sorted(expires_ms)
    units: list[UnitBack] = []
    previous: int | None = None
    for at, available in samples:
        back = min(available - base, len(ordered))
        while len(units) < back:
            expires = ordered[len(units)]
            units.append(UnitBack(expires, at, expires if previous is None else previous))
        previous = at
    return units, len(ordered) - len(units)


def release_lags(entries: Iterable[str | None]) -> tuple[list[int], Counter[str]]:
    """Per-hold lags (closedMs - expiresMs) of EXPIRED records, and a count of every state.

    An entry is release.lua's `STATE|user|expiresMs|createdMs|closedMs`; None (no record)
    counts as "missing".
    """
    lags: list[int] = []
    states: Counter[str] = Counter()
    for entry in entries:
        if entry is None:
            states["missing"] += 1
            continue
        state, _user, expires, _created, closed = entry.split("|", 4)
        states[state] += 1
        if state == "EXPIRED":
            lags.append(int(closed) - int(expires))
    return lags, states


def worst_per_second(units: Sequence[UnitBack], origin_ms: int) -> list[tuple[int, int]]:
    """(second since origin, the largest lag of units expiring in that second), in order."""
    worst: dict[int, int] = {}
    for unit in units:
        second = (unit.expires_ms - origin_ms) // 1000
        worst[second] = max(worst.get(second, 0), unit.lag_ms)
    return sorted(worst.items())


def expired_by_layer(metrics_text: str) -> dict[str, float]:
    """`sneakerdrop_holds_expired_total` by its `layer` label, from Prometheus text."""
    layers: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "sneakerdrop_holds_expired_total":
                layer = sample.labels.get("layer", "")
                layers[layer] = layers.get(layer, 0.0) + sample.value
    return layers


def layer_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0)) for k in sorted(after.keys() | before)}


def iso_ms(text: str) -> int:
    """An API timestamp (ISO-8601 UTC with a `Z`) as epoch milliseconds."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def clock_offset_ms(redis: Redis, rounds: int = 7) -> tuple[float, float]:
    """(Redis TIME - local time.time(), round trip) in ms, from the fastest of `rounds` reads."""
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        sent = time.time()
        redis_ms = await redis_now_ms(redis)
        received = time.time()
        rtt = (received - sent) * 1000
        offset = redis_ms - (sent + received) / 2 * 1000
        if best is None or rtt < best[1]:
            best = (offset, rtt)
    assert best is not None
    return round(best[0], 2), round(best[1], 3)


@dataclass
class Snapshot:
    at_ms: int
    available: int
    live_holds: int
    due: list[tuple[str, int]]  # reservation id, expiresAt ms


async def snapshot(redis: Redis, drop_id: str) -> Snapshot:
    drop_keys = DropKeys(drop_id)
    pipe = redis.pipeline(transaction=True)
    pipe.time()
    pipe.hget(drop_keys.drop, "avail")
    pipe.hlen(drop_keys.holds)
    pipe.zrange(drop_keys.due, 0, -1, withscores=True)
    (seconds, micros), available, live, due = await pipe.execute()
    return Snapshot(
        int(seconds) * 1000 + int(micros) // 1000,
        int(available),
        int(live),
        [(rid, int(score)) for rid, score in due],
    )


async def poll_stock(
    redis: Redis, drop_id: str, poll_s: float, until: int, deadline_ms: int
) -> tuple[list[tuple[int, int]], list[float]]:
    """(Redis ms, available) every `poll_s` until available >= `until` or past `deadline_ms`.

    Also returns the local gaps between polls (s), to show the poll's real resolution.
    """
    drop_key = DropKeys(drop_id).drop
    samples: list[tuple[int, int]] = []
    gaps: list[float] = []
    last = time.monotonic()
    next_at = last
    while True:
        pipe = redis.pipeline(transaction=True)
        pipe.time()
        pipe.hget(drop_key, "avail")
        (seconds, micros), available = await pipe.execute()
        now = time.monotonic()
        if samples:
            gaps.append(now - last)
        last = now
        at = int(seconds) * 1000 + int(micros) // 1000
        samples.append((at, int(available)))
        if int(available) >= until or at > deadline_ms:
            return samples, gaps
        next_at += poll_s
        await asyncio.sleep(max(next_at - time.monotonic(), 0.0))


class ExpiredEvents:
    """Listens, beside the server, to Redis's `expired` events of this drop's timer keys.

    Shows when Redis itself expired each timer key, which is when layer 1 can act at all.
    """

    def __init__(self, redis: Redis, drop_id: str) -> None:
        self.redis = redis
        self.prefix = DropKeys(drop_id).timer("")
        self.arrivals: dict[str, float] = {}  # reservation id -> local time.time()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self.ready.wait(), 10)

    async def _listen(self) -> None:
        db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(f"__keyevent@{db}__:expired")
            self.ready.set()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message and message["type"] == "message":
                    key = str(message["data"])
                    if key.startswith(self.prefix):
                        self.arrivals[key[len(self.prefix) :]] = time.time()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def event_lags(
    arrivals: dict[str, float], due: Iterable[tuple[str, int]], offset_ms: float
) -> list[float]:
    """Arrival of each timer key's `expired` event (on the Redis clock) minus its expiresAt."""
    expires = dict(due)
    return [
        round(at * 1000 + offset_ms - expires[rid], 1)
        for rid, at in arrivals.items()
        if rid in expires
    ]


async def closed_entries(redis: Redis, drop_id: str, ids: list[str]) -> list[str | None]:
    closed = DropKeys(drop_id).closed
    entries: list[str | None] = []
    for first in range(0, len(ids), 5000):
        entries += cast(list[str | None], await redis.hmget(closed, ids[first : first + 5000]))
    return entries
