"""Purchase storm: every holder buys at once, the product against a bare purchase reference.

    nice -n -10 .venv/bin/python -m loadtests.purchase_storm --database-url ... --redis-url ...

A product purchase is `purchase_claim.lua`, one PostgreSQL transaction inserting the
purchase row, then `purchase_commit.lua` (app/services/holds.py); the original
single-database backend did one PostgreSQL transaction. The reference
(loadtests/reference/purchase.py) does that transaction behind the same JWT check, so
the ratio of their throughputs is what the product's extra steps cost.

- Stores: a scratch database on the PostgreSQL server of `--database-url` (dropped at
  the end) holds both servers' tables; the Redis database of `--redis-url` must be
  empty and is flushed at the end. Both servers run `--workers` uvicorn workers
  (uvloop, httptools); the reference's pool is as large as the product's sale pool
  (DB_POOL_SIZE per worker, app/db/sales.py); holds last `--hold-ttl` s.
- Each phase buys from a fresh batch: `n` users (one INSERT, minted tokens), a drop of
  `n` units made through the API, one live product hold each (the product's own
  `reserve.lua`, pipelined with the app's KEYS and ARGV) and one `ref_holds` row each.
- Phases, product first: a warm-up (`--warmup-holders`, not reported); the burst
  (`--holders` buy at once over `--concurrency` connections, closed loop, each
  purchase once: throughput over the batch, p50 / p99); then per server an open loop
  at `--load-fraction` of its own burst throughput for `--fixed-seconds`.
- CPU per phase, in cores: each server's processes; PostgreSQL (this database's
  backends, watched every 0.1 s so the pool connections that close as a phase ends
  still count, and the server's own processes); Redis (the whole server: other
  databases on it count too); the load generator (this process); the rest ("other").
- Checks: the app's invariant for every product drop, and on both sides exactly one
  purchase row per purchase answered 201. A violation exits 3.

It prints a table, the targets (burst throughput product >= 0.8 x reference; product
p99 <= 100 ms at 70 % of its peak) and the product's purchases per API core, and writes
a JSON report to `--out-dir` (loadtests/reports/, git-ignored) unless `--no-json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import redis.asyncio as redis_asyncio

from app.embedded.common import free_port
from app.store.channels import database_of_url, stock_dirty_channel
from app.store.keys import new_hold_id
from app.store.scripts import ScriptName, read_source
from loadtests import servers
from loadtests.cpu import (
    cores_between,
    descendants,
    listening_pids,
    machine_busy_seconds,
    tree_cpu_seconds,
)
from loadtests.fixtures import User, asyncpg_dsn, create_drop, create_users
from loadtests.invariant import invariant_problems
from loadtests.loadgen import Generators, Plan, build_request
from loadtests.reference import purchase as reference_purchase
from loadtests.reference.app import reserve_call
from loadtests.report import write_json
from loadtests.stats import Phase, limit_target, ratio_target, summarise

REPORTS = Path(__file__).resolve().parent / "reports"
REFERENCE_APP = "loadtests.reference.purchase:app"
RATIO_TARGET = 0.8
P99_TARGET_MS = 100.0
SERVERS = ("product", "reference")
WATCH_SECONDS = 0.1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("Purchase storm: product vs a one-transaction reference, same run.")
    p.add_argument("--holders", type=int, default=1000, help="holders who buy in the burst")
    p.add_argument("--concurrency", type=int, default=64, help="connections of the burst")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of each server")
    p.add_argument("--load-fraction", type=float, default=0.7, help="of the burst's rate")
    p.add_argument("--fixed-seconds", type=float, default=10.0, help="s of a fixed-rate phase")
    p.add_argument("--max-connections", type=int, default=256, help="most of a fixed-rate phase")
    p.add_argument("--warmup-holders", type=int, default=200, help="0: no warm-up")
    p.add_argument("--db-pool-size", type=int, default=10, help="the product's DB_POOL_SIZE")
    p.add_argument("--hold-ttl", type=int, default=600, help="RESERVATION_TTL_SECONDS, s")
    p.add_argument("--pause", type=float, default=1.0, help="s between phases")
    servers.store_options(p)
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--no-json", action="store_true", help="write no report file")
    args = p.parse_args(argv)
    if not args.database_url or not args.redis_url:
        p.error("--database-url and --redis-url (or DATABASE_URL and REDIS_URL) are required")
    if min(args.holders, args.concurrency, args.workers, args.max_connections) < 1:
        p.error("--holders, --concurrency, --workers and --max-connections must be positive")
    if not 0 < args.load_fraction <= 1.5 or args.fixed_seconds <= 0:
        p.error("--load-fraction lies in (0, 1.5] and --fixed-seconds is positive")
    return args


@dataclass(frozen=True)
class Batch:
    """Holders of one phase: their drop, and per server each one's purchase request."""

    drop_id: str
    requests: dict[str, list[bytes]]


class Meter:
    """CPU seconds so far of each group (see the module docstring, step 4), on a
    PostgreSQL connection of its own."""

    def __init__(
        self,
        servers_pids: dict[str, int],
        pg: asyncpg.Connection,
        database_url: str,
        redis_url: str,
    ) -> None:
        self.servers = servers_pids
        self.pg = pg
        self.postmaster = listening_pids(database_url)
        self.redis = listening_pids(redis_url)
        self.database = database_url.rsplit("/", 1)[-1]
        # CPU seconds last seen of each of this run's backends, (pid, start) -> s. A pool's
        # overflow connections close as a phase ends and take their CPU time with them:
        # `watching` looks every WATCH_SECONDS so what they used is still counted.
        self.backends: dict[tuple[int, float], float] = {}

    async def look(self) -> None:
        rows = await self.pg.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
        )
        for row in rows:
            with contextlib.suppress(psutil.Error):
                backend = psutil.Process(row["pid"])
                times = backend.cpu_times()
                self.backends[(backend.pid, backend.create_time())] = times.user + times.system

    async def watch(self) -> None:
        while True:
            await self.look()
            await asyncio.sleep(WATCH_SECONDS)

    async def sample(self) -> dict[str, float]:
        await self.look()
        # The server's own processes (postmaster, WAL writer, checkpointer...), not other
        # jobs' backends: the same PostgreSQL serves other databases.
        rows = await self.pg.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend'"
        )
        own = {row["pid"] for row in rows} | set(self.postmaster)
        sample = {name: tree_cpu_seconds([pid], set()) for name, pid in self.servers.items()}
        sample["postgres"] = sum(self.backends.values()) + tree_cpu_seconds(
            own, descendants(self.postmaster) - own
        )
        sample["redis"] = tree_cpu_seconds(self.redis, set())
        sample["generator"] = tree_cpu_seconds(
            [os.getpid()], descendants([*self.postmaster, *self.redis, *self.servers.values()])
        )
        sample["steal"] = float(psutil.cpu_times().steal)
        sample["other"] = machine_busy_seconds() - sum(sample.values())
        return sample

    async def sessions(self) -> int:
        """Sessions opened so far on the scratch database: a pool that churns opens many."""
        found = await self.pg.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", self.database
        )
        return int(found or 0)


@dataclass
class Bench:
    args: argparse.Namespace
    stores: servers.Stores
    urls: dict[str, str]  # server name -> base URL
    http: aiohttp.ClientSession
    pg: asyncpg.Connection  # the scratch database, for seeding and the checks
    admin: User
    generators: Generators
    meter: Meter
    began_ns: int = field(default_factory=time.perf_counter_ns)
    phases: list[Phase] = field(default_factory=list)
    bought: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)  # (server, drop)
    stock: dict[str, int] = field(default_factory=dict)  # the product's drops: units
    batches: int = 0

    async def batch(self, count: int) -> Batch:
        self.batches += 1
        prefix = f"purchase-{secrets.token_hex(3)}-{self.batches}"
        users = await create_users(
            self.stores.database_url, self.stores.access_secret, count, prefix=prefix
        )
        base = self.urls["product"]
        drop = await create_drop(self.http, base, self.admin.token, prefix, total_stock=count)
        self.stock[drop["id"]] = count
        held = await self.product_holds(drop["id"], [u.id for u in users])
        ref_ids = [new_hold_id(drop["id"], u.id) for u in users]
        await reference_purchase.seed_holds(
            self.pg,
            [(rid, u.id, drop["id"]) for rid, u in zip(ref_ids, users, strict=True)],
            self.stores.hold_ttl_seconds,
        )
        requests: dict[str, list[bytes]] = {}
        for server, ids in (("product", held), ("reference", ref_ids)):
            host = self.urls[server].removeprefix("http://")
            requests[server] = [
                build_request("POST", f"/api/reservations/{rid}/purchase", host, u.token)
                for rid, u in zip(ids, users, strict=True)
            ]
        return Batch(drop["id"], requests)

    async def product_holds(self, drop_id: str, user_ids: list[str]) -> list[str]:
        """One live hold per user, through reserve.lua with the app's KEYS and ARGV."""
        client = redis_asyncio.Redis.from_url(self.stores.redis_url, decode_responses=True)
        channel = stock_dirty_channel(database_of_url(self.stores.redis_url))
        ttl_ms = self.stores.hold_ttl_seconds * 1000
        try:
            sha = await client.script_load(read_source(ScriptName.RESERVE))
            pipe = client.pipeline(transaction=False)
            hold_ids = [new_hold_id(drop_id, user_id) for user_id in user_ids]
            for user_id, hold_id in zip(user_ids, hold_ids, strict=True):
                keys, argv = reserve_call(drop_id, user_id, hold_id, ttl_ms, channel)
                pipe.evalsha(sha, len(keys), *keys, *argv)
            refused = [reply for reply in await pipe.execute() if reply[0] != "OK"]
        finally:
            await client.aclose()
        if refused:
            raise RuntimeError(f"{len(refused)} holds refused, e.g. {refused[0]}")
        return hold_ids

    async def phase(self, name: str, server: str, batch: Batch, rate: float | None) -> Phase:
        requests = batch.requests[server]
        host, port = self.urls[server].removeprefix("http://").rsplit(":", 1)
        connections = self.args.concurrency if rate is None else self.args.max_connections
        plan = Plan(host, int(port), requests, connections, rate, count=len(requests), reuse="fifo")
        await asyncio.sleep(self.args.pause)
        sessions = await self.meter.sessions()
        before, started = await self.meter.sample(), time.perf_counter()
        watcher = asyncio.create_task(self.meter.watch())
        try:
            records = await self.generators.run(plan)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        after, seconds = await self.meter.sample(), time.perf_counter() - started
        sessions = await self.meter.sessions() - sessions
        phase = summarise(
            records,
            scenario="purchase",
            name=name,
            server=server,
            connections=connections,
            rate=rate,
            duration=None,  # bounded by its count: judged from its start to its last answer
            warmup=0.0,
            run_began_ns=self.began_ns,
        )
        phase.cpu = {k: max(v, 0.0) for k, v in cores_between(before, after, seconds).items()}
        phase.notes.append(f"{sessions} PostgreSQL sessions opened")
        self.bought[(server, batch.drop_id)] = Counter(phase.outcomes)
        if name != "warmup":
            self.phases.append(phase)
        print(f"  {row(phase)}", flush=True)
        return phase

    async def check(self) -> list[str]:
        """Exactly one row per purchase answered 201, on both sides; the product's invariant."""
        problems: list[str] = []
        table = {"product": "purchases", "reference": "ref_purchases"}
        for (server, drop_id), outcomes in self.bought.items():
            count = f"SELECT count(*), count(DISTINCT reservation_id) FROM {table[server]}"
            rows, distinct = await self.pg.fetchrow(f"{count} WHERE drop_id = $1", drop_id)
            if rows != outcomes.get("201", 0) or rows != distinct:
                problems.append(
                    f"{server} drop {drop_id}: {outcomes.get('201', 0)} answered 201, "
                    f"{rows} purchase rows for {distinct} reservations"
                )
        held = await self.pg.fetchval("SELECT count(*) FROM ref_holds WHERE status = 'PURCHASED'")
        sold = await self.pg.fetchval("SELECT count(*) FROM ref_purchases")
        if held != sold:
            problems.append(f"reference: {held} holds PURCHASED, {sold} purchase rows")
        checked, drift = await invariant_problems(
            self.stores.database_url, self.stores.redis_url, self.stock, Counter()
        )
        if checked != len(self.stock):
            problems.append(f"the app's check saw {checked} of {len(self.stock)} product drops")
        return problems + drift


def row(phase: Phase) -> str:
    lat = phase.latency
    how = f"{phase.rate:,.0f}/s" if phase.rate is not None else f"{phase.connections} conns"
    groups = (phase.server, "postgres", "redis", "generator", "other")
    cores = ", ".join(f"{x} {phase.cpu.get(x, 0.0):.2f}" for x in groups)
    outcomes = ", ".join(f"{k} x{n}" for k, n in phase.outcomes.items())
    return (
        f"{phase.server:<9} {phase.name:<6} {how:>10} {phase.requests:>6} "
        f"{phase.throughput:>8,.0f}/s p50 {lat.p50 if lat else 0:7.1f} p99 "
        f"{lat.p99 if lat else 0:7.1f} ms | cores: {cores} | {outcomes}; {'; '.join(phase.notes)}"
    )


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")
    load, utc = os.getloadavg(), datetime.now(UTC).isoformat(timespec="seconds")
    return {"nproc": os.cpu_count(), "cpu_model": model, "load_average": load, "utc": utc}


async def start_reference(stores: servers.Stores, workers: int, pool: int, workdir: Path) -> Any:
    port = free_port()
    argv = [
        REFERENCE_APP if a == "loadtests.reference.app:app" else a
        for a in servers.reference_argv(port, workers)
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(servers.ROOT),
        "DATABASE_URL": stores.database_url,
        "JWT_ACCESS_SECRET": stores.access_secret,
        "REF_DB_POOL_SIZE": str(pool),
    }
    return await servers.ServerProcess.start("reference", argv, env, port, workdir)


async def measure(bench: Bench) -> None:
    args = bench.args
    if args.warmup_holders:
        warm = await bench.batch(args.warmup_holders)
        for server in SERVERS:
            await bench.phase("warmup", server, warm, None)
    burst = await bench.batch(args.holders)
    peaks = {
        server: (await bench.phase("burst", server, burst, None)).throughput for server in SERVERS
    }
    for server in SERVERS:
        rate = args.load_fraction * peaks[server]
        fixed = await bench.batch(max(1, round(rate * args.fixed_seconds)))
        await bench.phase("fixed", server, fixed, rate)


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Bench, list[str]]:
    maintenance_url, redis_url = args.database_url, args.redis_url
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
    scratch = stores.database_url
    started: list[servers.ServerProcess] = []
    generators = Generators(0)  # in this process: a phase's CPU window is the phase's own
    try:
        overrides = {"DB_POOL_SIZE": str(args.db_pool_size)}
        product = await servers.start_product(stores, free_port(), args.workers, workdir, overrides)
        started.append(product)
        # The product's purchases run on a pool of DB_POOL_SIZE per worker (app/db/sales.py).
        reference = await start_reference(stores, args.workers, args.db_pool_size, workdir)
        started.append(reference)
        # A new connection per set-up call: a kept-alive one may be closed by the server's
        # idle timeout between phases just as it is reused.
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(force_close=True),
        ) as http:
            await asyncio.gather(*(proc.wait_ready(http) for proc in started))
            (admin,) = await create_users(
                scratch,
                stores.access_secret,
                1,
                prefix=f"purchase-admin-{secrets.token_hex(3)}",
                role="admin",
            )
            pg = await asyncpg.connect(asyncpg_dsn(scratch))
            await reference_purchase.create_tables(pg)  # beside the product's, migrated now
            meter_pg = await asyncpg.connect(asyncpg_dsn(maintenance_url))
            try:
                pids = {p.name: p.process.pid for p in started}
                meter = Meter(pids, meter_pg, scratch, redis_url)
                urls = {p.name: p.url for p in started}
                bench = Bench(args, stores, urls, http, pg, admin, generators, meter)
                print(f"product {product.url}, reference {reference.url}", flush=True)
                await measure(bench)
                problems = await bench.check()
            finally:
                await pg.close()
                await meter_pg.close()
    finally:
        generators.close()
        for proc in reversed(started):
            # uvicorn raises the SIGTERM it caught again once it has shut down cleanly.
            if (code := await proc.stop()) not in (0, None, -signal.SIGTERM):
                print(f"{proc.name} stopped with {code}:\n{proc.log_tail()}", file=sys.stderr)
        await servers.drop_database(maintenance_url, scratch)
        await servers.flush_redis(redis_url)
    return bench, problems


def finish(args: argparse.Namespace, bench: Bench, problems: list[str]) -> int:
    phase = {(p.server, p.name): p for p in bench.phases}
    burst, fixed = phase[("product", "burst")], phase[("product", "fixed")]
    found = [
        ratio_target(
            f"purchase burst: product >= {RATIO_TARGET} x reference (purchases/s)",
            burst.throughput,
            phase[("reference", "burst")].throughput,
            RATIO_TARGET,
        ),
        limit_target(
            f"purchase p99 <= {P99_TARGET_MS:g} ms at {args.load_fraction:.0%} of the "
            f"product's peak ({fixed.rate or 0:,.0f}/s)",
            fixed.latency.p99 if fixed.latency else None,
            P99_TARGET_MS,
            "ms",
        ),
    ]
    api_cores = burst.cpu.get("product") or None
    per_core = burst.throughput / api_cores if api_cores else None
    print("\nphases:", *[f"  {row(p)}" for p in bench.phases], sep="\n")
    print("targets:", *[f"  [{t.verdict}] {t.name}: {t.measured}" for t in found], sep="\n")
    print(
        f"per API core: {burst.throughput:,.0f} purchases/s over {api_cores or 0:.2f} product "
        f"cores = {per_core or 0:,.0f} purchases/s per core"
    )
    print(f"checks: {len(problems)} problems", *[f"!!! {p}" for p in problems], sep="\n")
    if not args.no_json:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"purchase-storm-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        summary = {
            "argv": sys.argv,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine(),
            "targets": [
                {"name": t.name, "measured": t.measured, "passed": t.passed} for t in found
            ],
            "purchases_per_api_core": per_core,
            "problems": problems,
        }
        write_json(path, summary, bench.phases)
        print(f"wrote {path}")
    return 3 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="purchase-storm-"))
    try:
        import uvloop

        bench, problems = uvloop.run(run(args, workdir))
        return finish(args, bench, problems)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
