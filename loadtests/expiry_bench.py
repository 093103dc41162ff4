"""Expiry benchmark: N live holds expiring over a spread, and how soon each unit is back.

    python -m loadtests.expiry_bench --holds 100000 --spread-seconds 60
    python -m loadtests.expiry_bench --holds 2000 --spread-seconds 10      # a quick run

The issue's target: 100,000 live holds expiring over a minute, each unit back in
stock at most 1 s after its hold's ``expiresAt`` (p99).

Method
------
1. Starts ``sneakerdrop serve`` as a subprocess on 127.0.0.1 (``RATE_LIMITS=off``,
   ``LOG_LEVEL=WARNING``, fresh JWT secrets, ``RESERVATION_TTL_SECONDS`` = the spread
   plus ``--gap-seconds``), on the stores of ``--database-url`` / ``--redis-url``
   (default: ``DATABASE_URL`` / ``REDIS_URL``; unset: embedded ones in a temporary
   ``DATA_DIR``, removed afterwards). ``--target URL`` attaches to a running server
   instead; then ``--redis-url``, ``--database-url`` and (for ``--via http``) the
   server's ``JWT_ACCESS_SECRET`` in the environment are needed.
2. Creates the users straight in PostgreSQL (one ``COPY``) and mints their access
   tokens with the app's ``TokenService``: the per-user limit needs one user per hold,
   and signing up 100,000 users over HTTP would measure bcrypt. Creates one drop of
   ``--holds`` units (``perUserLimit`` 1) through the admin API.
3. Takes the holds at a steady rate over ``--spread-seconds`` (open loop, at most
   ``--concurrency`` in flight), so their ``expiresAt`` spread evenly over the same
   span one TTL later. ``--via http``: ``POST /api/drops/{id}/reserve``, the product
   path. ``--via store`` (the default): the app's ``HoldStore.reserve`` (the same
   ``reserve.lua``) from this process, because HTTP with the load generator on the same
   two cores falls short of 1,700 reserves/s; the report says which was used.
   Reserving stops ``--margin-seconds`` before the first hold expires, so nothing but
   expiry moves the stock afterwards.
4. Snapshot, in one ``MULTI``: the drop's ``avail`` (the base) and its due set, whose
   scores are every live hold's ``expiresAt`` as ``reserve.lua`` computed it from
   Redis ``TIME``.
5. Measures without touching the server: every ``--poll-ms`` this process reads
   ``TIME`` and the drop's ``avail`` in one ``MULTI`` on its own Redis connection.
   Nothing else changes the stock now, so the k-th unit back belongs to the k-th
   ``expiresAt`` in sorted order: ``lag_k = (first poll with avail >= base + k) -
   expiresAt_k``, both on the Redis clock. A unit came back between that poll and the
   one before, so the report gives the lag as an upper bound (the headline, judged
   against the target) and a lower bound. Cross-check: ``release.lua`` records each
   ended hold with the Redis time it ran (``{d:ID}:closed``), read after the run: the
   per-hold release lag, exact to the millisecond.
6. Which layer released how many (keyspace listener, sweeper, reconciler): the deltas
   of ``sneakerdrop_holds_expired_total`` on ``/metrics``. This process also listens to
   the drop's timer-key ``expired`` events, as the app's listener does: Redis sends one
   when it expires a key itself and one when ``release.lua``'s ``DEL`` meets a key past
   its TTL, so their count against the keyspace layer's releases shows how much of the
   listener's work is a no-op. CPU seconds of the server's processes (when started
   here) and of Redis (``INFO cpu``) during the expiry phase; with ``--py-spy``, a
   sampling profile of the API process over that phase (collapsed stacks).
7. The invariant at the end, as ``sneakerdrop check`` does it (``Reconciler.check``):
   available + live holds + purchases == total, Redis agreeing with PostgreSQL.
8. Writes ``loadtests/reports/expiry-<UTC time>.json`` and ``.png`` (lag over time,
   and units expired vs units back).

With ``--database-url`` / ``--redis-url`` given, the run leaves its users, drop and
ended-hold records behind: use a database and a Redis db of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import bcrypt
import psutil
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.embedded.common import free_port
from loadtests.servers import ServerProcess, serve_argv

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "loadtests" / "reports"
HOST = "127.0.0.1"
TARGET_MS = 1000.0
USER_PASSWORD = b"expiry-bench-password"


# --- pure helpers: statistics and the lag maths ---------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending, non-empty sequence."""
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, float] | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
    }


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


# --- the server under test -----------------------------------------------------------


class Server(ServerProcess):
    """`sneakerdrop serve` (loadtests/servers.py), plus the CPU of its process tree."""

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of the server's process tree, summed by process name."""
        totals: dict[str, float] = {}
        try:
            root = psutil.Process(self.process.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return totals
        for member in members:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                name = member.name()
                totals[name] = totals.get(name, 0.0) + times.user + times.system
        return totals


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


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


# --- setup: users, tokens, the drop --------------------------------------------------


async def create_users(database_url: str, count: int, run_id: str) -> list[str]:
    """`count` customers in one COPY (ids as the app makes them); returns their ids."""
    import asyncpg

    from app.store import keys

    password_hash = bcrypt.hashpw(USER_PASSWORD, bcrypt.gensalt(4)).decode()
    ids = [keys.new_id() for _ in range(count)]
    records = [
        (user_id, f"expiry-{run_id}-{i}@example.com", password_hash, f"Expiry {i}", "customer")
        for i, user_id in enumerate(ids)
    ]
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.copy_records_to_table(
            "users",
            records=records,
            columns=["id", "email", "password_hash", "display_name", "role"],
        )
    finally:
        await connection.close()
    return ids


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str
) -> dict[str, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
        payload: dict[str, Any] = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"POST {url}: {response.status} {payload}")
        return payload


async def server_metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as response:
        return expired_by_layer(await response.text())


# --- phase 1: take the holds at a steady rate ----------------------------------------


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
        headers = {"Authorization": f"Bearer {self.tokens[index]}"}
        try:
            async with self.http.post(self.url, headers=headers) as response:
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
        from app.store import keys
        from app.store.holds import ReserveOutcome

        ref = keys.parse_reservation_id(keys.new_reservation_id(self.drop_id, self.user_ids[index]))
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
    interval = spread_s / count
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    phase.started = start = time.monotonic()
    wall_minus_mono = time.time() - start
    sent = 0
    while sent < count:
        first = phase.first_expires_ms
        if first is not None:
            stop_at = (first - offset_ms) / 1000 - wall_minus_mono - margin_s
            if time.monotonic() >= stop_at:
                phase.skipped = count - sent
                break
        due = min(count, math.floor((time.monotonic() - start) / interval) + 1)
        while sent < due:
            await slots.acquire()
            now = time.monotonic()
            phase.behind_s.append(max(now - (start + sent * interval), 0.0))
            phase.last_sent = now
            task = asyncio.create_task(reserver.one(sent))
            tasks.add(task)
            task.add_done_callback(done)
            sent += 1
        if sent < count:
            await asyncio.sleep(max(start + sent * interval - time.monotonic(), 0.0))
    if tasks:
        await asyncio.gather(*tasks)


# --- phase 2: watch the stock come back ----------------------------------------------


@dataclass
class Snapshot:
    at_ms: int
    available: int
    live_holds: int
    due: list[tuple[str, int]]  # reservation id, expiresAt ms


async def snapshot(redis: Redis, drop_id: str) -> Snapshot:
    from app.store.keys import DropKeys

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
    from app.store.keys import DropKeys

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
        from app.store.keys import DropKeys

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
    from app.store.keys import DropKeys

    closed = DropKeys(drop_id).closed
    entries: list[str | None] = []
    for first in range(0, len(ids), 5000):
        entries += cast(list[str | None], await redis.hmget(closed, ids[first : first + 5000]))
    return entries


# --- optional: a py-spy profile of the server during the expiry phase -----------------


def stem(args: argparse.Namespace, run_id: str) -> Path:
    """The report files' path without suffix."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path: Path = args.out or REPORTS / f"expiry-{run_id}"
    return path


async def start_profile(
    server: Server, base: Path, seconds: float
) -> tuple[asyncio.subprocess.Process, Path] | None:
    """`py-spy record` of the API process for `seconds` (sampling, non-blocking)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print("warning: no py-spy in the venv (pip install py-spy); no profile", flush=True)
        return None
    output = base.with_suffix(".pyspy.folded")  # collapsed stacks: speedscope, flamegraph.pl
    process = await asyncio.create_subprocess_exec(
        str(spy),
        "record",
        "--nonblocking",
        "--rate",
        "200",
        "--format",
        "raw",
        "--duration",
        str(math.ceil(seconds)),
        "--pid",
        str(server.process.pid),
        "--output",
        str(output),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return process, output


async def finish_profile(profiler: tuple[asyncio.subprocess.Process, Path] | None) -> list[str]:
    if profiler is None:
        return []
    process, output = profiler
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
    return [str(output)] if output.exists() else []


# --- the report ----------------------------------------------------------------------


def plot(path: Path, units: list[UnitBack], release: list[tuple[int, int]], title: str) -> None:
    """Lag over time (top) and units expired vs units back (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = units[0].expires_ms if units else 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    top.scatter(
        [(u.expires_ms - origin) / 1000 for u in units],
        [u.lag_ms for u in units],
        s=1,
        label="stock lag (k-th unit back - k-th expiresAt), polled",
        rasterized=True,
    )
    if release:
        top.scatter(
            [(e - origin) / 1000 for e, _ in release],
            [lag for _, lag in release],
            s=1,
            alpha=0.4,
            label="per-hold release lag (release.lua's own time)",
            rasterized=True,
        )
    top.axhline(TARGET_MS, color="red", linestyle="--", label=f"target {TARGET_MS:g} ms")
    top.set_ylabel("lag (ms)")
    top.legend(loc="upper left", markerscale=6)
    top.set_title(title)
    expiries = [(u.expires_ms - origin) / 1000 for u in units]
    backs = sorted((u.seen_ms - origin) / 1000 for u in units)
    counts = list(range(1, len(units) + 1))
    bottom.step(expiries, counts, where="post", label="units expired (expiresAt)")
    bottom.step(backs, counts, where="post", label="units back in stock (polled)")
    bottom.set_xlabel("seconds since the first expiresAt (Redis clock)")
    bottom.set_ylabel("units")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def verdict(lag: dict[str, float] | None, missing: int, invariant_ok: bool) -> list[str]:
    lines = []
    if lag is None:
        return ["no unit came back: nothing to judge"]
    met = lag["p99"] <= TARGET_MS and missing == 0
    lines.append(
        f"stock back p99 <= {TARGET_MS:g} ms after expiresAt: {'met' if met else 'MISSED'} "
        f"(p99 {lag['p99']:.0f} ms, max {lag['max']:.0f} ms, {missing} units never seen back)"
    )
    lines.append(f"invariant after the run: {'ok' if invariant_ok else 'BROKEN'}")
    return lines


# --- the run -------------------------------------------------------------------------


@dataclass
class Stores:
    url: str
    database_url: str
    redis_url: str
    server: Server | None
    workdir: Path


async def open_stores(
    args: argparse.Namespace, http: aiohttp.ClientSession, secrets_: tuple[str, str]
) -> Stores:
    from app.embedded import running_store_urls

    workdir = Path(tempfile.mkdtemp(prefix="expiry-bench-"))
    if args.target:
        if not (args.database_url and args.redis_url):
            raise SystemExit("--target needs --database-url and --redis-url (or the env vars)")
        return Stores(args.target.rstrip("/"), args.database_url, args.redis_url, None, workdir)
    env = {
        **os.environ,
        "DATA_DIR": str(workdir / "data"),
        "RATE_LIMITS": "off",
        "LOG_LEVEL": "WARNING",
        "ENV": "development",
        "JWT_ACCESS_SECRET": secrets_[0],
        "JWT_REFRESH_SECRET": secrets_[1],
        "RESERVATION_TTL_SECONDS": str(args.ttl_seconds),
    }
    for name, value in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)  # embedded, under DATA_DIR
    for item in args.server_env:
        name, _, value = item.partition("=")
        env[name] = value
    port = args.port or free_port()
    server = await Server.start("serve", serve_argv(port, args.workers), env, port, workdir)
    try:
        await server.wait_ready(http)
    except BaseException:
        await server.stop()
        raise
    database_url, redis_url = args.database_url, args.redis_url
    if not (database_url and redis_url):
        running = running_store_urls(workdir / "data")
        assert running is not None, "serve started no embedded stores"
        database_url = database_url or running[0]
        redis_url = redis_url or running[1]
    return Stores(server.url, database_url, redis_url, server, workdir)


@dataclass
class Run:
    """What the phases of one run share."""

    args: argparse.Namespace
    run_id: str
    stores: Stores
    http: aiohttp.ClientSession
    container: Any  # app.container.Container, imported late
    tokens: Any  # app.services.tokens.TokenService
    poller: Redis  # this process's own connection, for TIME and the stock
    offset_ms: float  # Redis TIME - local time.time()
    rtt_ms: float


async def create_drop(run: Run) -> tuple[str, list[str]]:
    """The drop (through the admin API, with a minted admin token) and one user per hold."""
    args = run.args
    admin_id = (await create_users(run.stores.database_url, 1, f"{run.run_id}-admin"))[0]
    admin = run.tokens.issue_access(admin_id, "admin", secrets.token_hex(16), "bench admin")
    body = {
        "name": f"expiry bench {run.run_id}",
        "priceCents": 19900,
        "totalStock": args.holds,
        "perUserLimit": 1,
    }
    drop = await post_json(run.http, f"{run.stores.url}/api/drops", body, admin)
    started = time.monotonic()
    user_ids = await create_users(run.stores.database_url, args.holds, run.run_id)
    print(
        f"drop {drop['id']}: {args.holds} units; {len(user_ids)} users in "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )
    return drop["id"], user_ids


async def take_holds(run: Run, drop_id: str, user_ids: list[str]) -> ReservePhase:
    args = run.args
    phase = ReservePhase(args.via, args.holds)
    reserver: Reserver
    if args.via == "http":
        user_tokens = [
            run.tokens.issue_access(user_id, "customer", secrets.token_hex(16), f"Expiry {i}")
            for i, user_id in enumerate(user_ids)
        ]
        reserver = HttpReserver(phase, run.http, run.stores.url, drop_id, user_tokens)
    else:
        ttl_ms = args.ttl_seconds * 1000
        reserver = StoreReserver(phase, run.container.holds, drop_id, user_ids, ttl_ms)
    print(
        f"reserving {args.holds} via {args.via} over {args.spread_seconds:g} s "
        f"({args.holds / args.spread_seconds:.0f}/s)",
        flush=True,
    )
    await reserve_steadily(
        reserver,
        args.holds,
        args.spread_seconds,
        args.concurrency,
        run.offset_ms,
        args.margin_seconds,
    )
    return phase


@dataclass
class Watched:
    snap: Snapshot
    samples: list[tuple[int, int]]
    poll_gaps: list[float]
    layers: dict[str, int]
    cpu: dict[str, Any]
    profile: list[str]
    expired_events: dict[str, float]  # reservation id -> arrival of its timer's `expired`

    @property
    def expiries(self) -> list[int]:
        return [expires for _, expires in self.snap.due]


async def watch_expiry(run: Run, drop_id: str, answered_ok: int) -> Watched:
    """Snapshot the live holds, then poll the stock until every unit is back (or settle ends)."""
    args, server = run.args, run.stores.server
    layers_before = await server_metrics(run.http, run.stores.url)
    cpu_before = server.cpu_by_process() if server else {}
    redis_cpu_before = await redis_cpu(run.poller)
    events = ExpiredEvents(run.poller, drop_id)
    await events.start()
    snap = await snapshot(run.poller, drop_id)
    if not snap.due:
        raise RuntimeError("no live holds after the reserve phase")
    first, last = snap.due[0][1], snap.due[-1][1]
    if snap.at_ms >= first:
        raise RuntimeError(
            "the snapshot came after the first expiry: raise --ttl-seconds "
            f"(snapshot {snap.at_ms}, first expiresAt {first})"
        )
    if len(snap.due) != answered_ok or snap.live_holds != answered_ok:
        print(
            f"warning: {len(snap.due)} due entries / {snap.live_holds} live holds "
            f"but {answered_ok} reserves answered OK",
            flush=True,
        )
    print(
        f"{len(snap.due)} holds expire over {(last - first) / 1000:.1f} s, "
        f"the first in {(first - snap.at_ms) / 1000:.1f} s; polling every {args.poll_ms:g} ms",
        flush=True,
    )
    profiler = None
    if args.py_spy and server:
        seconds = (last - snap.at_ms) / 1000 + 2
        profiler = await start_profile(server, stem(args, run.run_id), seconds)
    samples, gaps = await poll_stock(
        run.poller,
        drop_id,
        args.poll_ms / 1000,
        snap.available + len(snap.due),
        last + int(args.settle_seconds * 1000),
    )
    await events.stop()
    profile = await finish_profile(profiler)
    cpu: dict[str, Any] = {
        "server": cpu_delta(cpu_before, server.cpu_by_process()) if server else None,
        "redis": round(await redis_cpu(run.poller) - redis_cpu_before, 2),
    }
    layers = layer_delta(layers_before, await server_metrics(run.http, run.stores.url))
    return Watched(snap, samples, gaps, layers, cpu, profile, events.arrivals)


async def invariant(run: Run, drop_id: str) -> dict[str, Any]:
    """available + live holds + purchases == total, as `sneakerdrop check` sees it."""
    from app.background.reconciler import Reconciler

    container = run.container
    checks = await Reconciler(container.db, container.drops, container.holds).check()
    check = next(c for c in checks if c.drop_id == drop_id)
    balanced = check.available + check.live_holds + check.sold_pg == check.total_pg
    return {
        "ok": check.healthy and balanced,
        "total": check.total_pg,
        "available": check.available,
        "live_holds": check.live_holds,
        "sold": check.sold_pg,
        "healthy": check.healthy,
    }


async def measure(run: Run) -> dict[str, Any]:
    """The whole run on open stores: setup, holds, expiry, then the figures and files."""
    args = run.args
    started = machine()
    drop_id, user_ids = await create_drop(run)
    phase = await take_holds(run, drop_id, user_ids)
    reserve_report = phase.report()
    print(f"reserve phase: {json.dumps(reserve_report)}", flush=True)
    watched = await watch_expiry(run, drop_id, phase.ok)

    expiries = watched.expiries
    first, last = expiries[0], expiries[-1]
    units, missing = stock_lags(expiries, watched.samples, watched.snap.available)
    lag = summary(u.lag_ms for u in units)
    entries = await closed_entries(run.poller, drop_id, [rid for rid, _ in watched.snap.due])
    per_hold, states = release_lags(entries)
    released = [
        (expires, int(entry.split("|")[4]) - expires)
        for (_, expires), entry in zip(watched.snap.due, entries, strict=True)
        if entry is not None and entry.startswith("EXPIRED|")
    ]
    checked = await invariant(run, drop_id)
    result: dict[str, Any] = {
        "argv": sys.argv,
        "run_id": run.run_id,
        "machine_at_start": started,
        "machine_at_end": machine(),
        "server": "started here" if run.stores.server else run.stores.url,
        "stores": {
            "database": "given" if args.database_url else "embedded",
            "redis": "given" if args.redis_url else "embedded",
        },
        "clock": {"redis_minus_local_ms": run.offset_ms, "rtt_ms": run.rtt_ms},
        "drop_id": drop_id,
        "reserve_phase": reserve_report,
        "expiry_phase": {
            "holds": len(expiries),
            "per_second": round(len(expiries) / max((last - first) / 1000, 0.001), 1),
            "base_available": watched.snap.available,
            "spread_seconds": round((last - first) / 1000, 2),
            "poll_ms": args.poll_ms,
            "polls": len(watched.samples),
            "poll_gap_ms": summary(g * 1000 for g in watched.poll_gaps),
            "units_back": len(units),
            "units_never_seen_back": missing,
            "seconds_from_first_expiry_to_last_poll": round(
                (watched.samples[-1][0] - first) / 1000, 2
            ),
        },
        "stock_lag_ms": lag,
        "stock_lag_floor_ms": summary(u.lag_floor_ms for u in units),
        "release_lag_ms": summary(per_hold),
        "closed_states": dict(states),
        # Redis emits `expired` when it expires a timer key itself (layer 1's cue) and also
        # when release.lua's DEL meets a timer key already past its TTL (after the release).
        "timer_expired_events_lag_ms": summary(
            event_lags(watched.expired_events, watched.snap.due, run.offset_ms)
        ),
        "released_by_layer": watched.layers,
        "cpu_seconds_during_expiry": watched.cpu,
        "worst_lag_per_second": worst_per_second(units, first),
        "invariant": checked,
        "target_ms": TARGET_MS,
        "verdict": verdict(lag, missing, checked["ok"]),
    }
    base = stem(args, run.run_id)
    json_path, png_path = base.with_suffix(".json"), base.with_suffix(".png")
    result["files"] = [str(json_path), str(png_path), *watched.profile]
    json_path.write_text(json.dumps(result, indent=2))
    title = (
        f"{len(expiries):,} holds over {(last - first) / 1000:.0f} s via {args.via}: "
        f"stock lag p99 {lag['p99'] if lag else float('nan'):.0f} ms"
    )
    plot(png_path, units, released, title)
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from app.config import load_settings
    from app.container import build_container
    from app.services.tokens import TokenService

    access = os.environ.get("JWT_ACCESS_SECRET") if args.target else None
    if args.target and args.via == "http" and not access:
        raise SystemExit("--target with --via http needs the server's JWT_ACCESS_SECRET")
    secrets_ = (access or secrets.token_urlsafe(48), secrets.token_urlsafe(48))
    print(f"machine: {json.dumps(machine())}", flush=True)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        stores = await open_stores(args, http, secrets_)
        container = None
        poller = Redis.from_url(stores.redis_url, decode_responses=True)
        try:
            settings = load_settings(
                database_url=stores.database_url,
                redis_url=stores.redis_url,
                jwt_access_secret=secrets_[0],
                jwt_refresh_secret=secrets_[1],
                access_token_ttl_seconds=86400,
                data_dir=stores.workdir / "bench",
            )
            container = await build_container(settings)
            offset_ms, rtt_ms = await clock_offset_ms(poller)
            print(f"clock: Redis TIME - local = {offset_ms} ms (rtt {rtt_ms} ms)", flush=True)
            run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            tokens = TokenService(settings)
            run = Run(args, run_id, stores, http, container, tokens, poller, offset_ms, rtt_ms)
            return await measure(run)
        except BaseException:
            if stores.server is not None:
                print(f"serve log (last lines):\n{stores.server.log_tail()}", file=sys.stderr)
            raise
        finally:
            await poller.aclose()
            if container is not None:
                await container.close()
            if stores.server is not None:
                code = await stores.server.stop()
                if code not in (0, None):
                    print(
                        f"serve stopped with {code}:\n{stores.server.log_tail()}", file=sys.stderr
                    )
            shutil.rmtree(stores.workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holds", type=int, default=100_000)
    parser.add_argument("--spread-seconds", type=float, default=60.0)
    parser.add_argument(
        "--via",
        choices=["http", "store"],
        default="store",
        help="take the holds through POST .../reserve or the app's HoldStore.reserve",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="reserves in flight at most")
    parser.add_argument(
        "--gap-seconds", type=float, default=10.0, help="from the last reserve to the first expiry"
    )
    parser.add_argument("--ttl-seconds", type=int, help="default: spread + gap (whole seconds)")
    parser.add_argument(
        "--margin-seconds", type=float, default=2.0, help="stop reserving this long before expiry"
    )
    parser.add_argument("--poll-ms", type=float, default=25.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=15.0, help="wait past the last expiresAt"
    )
    parser.add_argument("--workers", type=int, default=1, help="serve --workers")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--target", help="attach to a running server at this URL")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra serve env"
    )
    parser.add_argument("--out", type=Path, help="report path without suffix")
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the server during the expiry phase"
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the whole run")
    args = parser.parse_args(argv)
    if not 1 <= args.holds <= 1_000_000 or not args.spread_seconds > 0:
        parser.error("--holds must be 1..1000000 and --spread-seconds positive")
    if args.ttl_seconds is None:
        args.ttl_seconds = math.ceil(args.spread_seconds + args.gap_seconds)
    if args.ttl_seconds <= args.spread_seconds + args.margin_seconds:
        parser.error("--ttl-seconds must exceed the spread plus the margin")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(bench(args), args.max_seconds)

    try:
        import uvloop
    except ImportError:
        result = asyncio.run(bounded())
    else:
        result = uvloop.run(bounded())
    for key in (
        "stock_lag_ms",
        "stock_lag_floor_ms",
        "release_lag_ms",
        "timer_expired_events_lag_ms",
        "released_by_layer",
    ):
        print(f"{key}: {json.dumps(result[key])}")
    print(f"cpu seconds during expiry: {json.dumps(result['cpu_seconds_during_expiry'])}")
    print("targets:\n  " + "\n  ".join(result["verdict"]))
    print("wrote " + ", ".join(result["files"]))
    return 0 if all("MISSED" not in v and "BROKEN" not in v for v in result["verdict"]) else 1


if __name__ == "__main__":
    sys.exit(main())
