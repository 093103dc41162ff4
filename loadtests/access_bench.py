"""Fair access on the hot paths: joining a queue against reserving, reading one's ticket
against reading the drop, in the same run on the same server.

    nice -n -10 .venv/bin/python -m loadtests.access_bench \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/12 --flush-redis

Run it from the repository root. What it does:

1. Stores: `--database-url` / `--redis-url` (default: DATABASE_URL / REDIS_URL), or
   embedded PostgreSQL and Valkey when neither is given; a scratch database; the Redis
   database must be empty (or `--flush-redis`); both are emptied at the end.
2. `sneakerdrop serve --workers N` (loadtests/servers.py), RATE_LIMITS=off.
3. `--users` shoppers by COPY (loadtests/access_fixtures.py) with minted tokens.
4. `--rounds` rounds, each of four closed-loop phases of `--duration` s over
   `--concurrency` connections (the storm's `Bench`: the raw HTTP/1.1 generator, the
   CPU meter, the worker stalls), the order of each pair flipped every round:
   - join: `POST /api/drops/{id}/queue` on a fresh queue drop that starts in an hour
     (the pre-queue, where a storm of joins lands), shopper i's first join (201);
     against reserve: `POST /api/drops/{id}/reserve` on a fresh open drop with units to
     spare, shopper i's hold (201; the storm's hold path). Distinct shoppers on both
     sides: request i is shopper i, and a phase never asks for more than `--users`.
   - ticket: `GET /api/drops/{id}/queue/me` on a queue drop that has started, every
     shopper holding a ticket in its ordered pre-queue (written through queue_join.lua
     before the start, so each read ranks the ticket: ZRANK), admitting one a minute
     (almost everyone waits, with a position and what is ahead); against `GET
     /api/drops/{id}` of the same drop.
   - unless `--no-floor`, `GET /healthz`: no target, the most a route that does nothing
     gets through FastAPI's layers, which the join and ticket routes (and the drop
     read) go through while reserve is served beside them (app/api/hot_paths.py).
5. The invariant of every drop (loadtests/invariant.py).
6. Report: every phase, the targets (issue 21: join >= 0.8 x reserve's hold path,
   ticket >= 0.8 x the drop read, medians over the rounds), the machine with its load
   average at the start and the end; a JSON file in `--out-dir` unless `--no-json`.

Exit codes: 0 done (`--strict`: 2 when a target failed), 1 the run broke, 3 the invariant
was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from app.embedded.common import free_port
from loadtests import servers
from loadtests.access_fixtures import (
    copy_users,
    create_access_drop,
    drop_seed,
    seed_tickets,
    with_tokens,
)
from loadtests.cpu import machine
from loadtests.fixtures import create_users
from loadtests.loadgen import REUSE_ORDERS, Generators, build_request
from loadtests.report import phase_line, target_lines, write_json
from loadtests.scenarios import HOLD_PATH_STOCK, PER_USER_LIMIT, Bench
from loadtests.stats import Phase, Target, ratio_target

REPORTS = Path(__file__).resolve().parent / "reports"
RATIO = 0.8  # issue 21: join >= 0.8 x reserve; ticket >= 0.8 x GET /api/drops/{id}
JOIN, RESERVE = "join: POST /queue (first join)", "reserve: POST /reserve (hold path)"
TICKET, DROP = "ticket: GET /queue/me", "drop: GET /api/drops/{id}"
PAIRS = ((JOIN, RESERVE), (TICKET, DROP))
# Not a target: a route that does nothing through FastAPI's layers, which the join and
# ticket routes go through and reserve does not (app/api/hot_paths.py).
FLOOR = "floor: GET /healthz (FastAPI, no work)"
START_WAIT_S = 2.0  # the ticket drop starts this long after its tickets are written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("Queue join and ticket reads against reserve and drop reads.")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    p.add_argument("--concurrency", type=int, default=64, help="connections of each phase")
    p.add_argument("--duration", type=float, default=6.0, help="s per phase")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the four phases")
    p.add_argument("--users", type=int, default=40_000, help="shoppers (distinct per phase)")
    p.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="leave out the GET /healthz phase of each round (FastAPI's floor, no target)",
    )
    p.add_argument("--hold-ttl", type=int, default=900, help="RESERVATION_TTL_SECONDS, s")
    p.add_argument("--warmup", type=float, default=1.0, help="s not counted of a phase")
    p.add_argument("--pause", type=float, default=1.0, help="s between phases")
    p.add_argument("--reuse", choices=REUSE_ORDERS, default="fifo", help="as in storm.py")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes")
    p.add_argument(
        "--wait-quiet", type=float, default=0.0, help="s to wait for an idle machine per phase"
    )
    servers.store_options(p)
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--no-json", action="store_true", help="write no report file")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target fails")
    p.set_defaults(max_connections=256)  # Bench.phase's
    args = p.parse_args(argv)
    if min(args.workers, args.concurrency, args.rounds, args.users) < 1:
        p.error("--workers, --concurrency, --rounds and --users must be positive")
    return args


async def queue_drop(bench: Bench, name: str, starts_at: datetime) -> str:
    made = await create_access_drop(
        bench.http,
        bench.product.url,
        bench.admin.token,
        name,
        access="queue",
        stock=HOLD_PATH_STOCK,
        starts_at=starts_at,
        admit_per_minute=1,
        per_user_limit=PER_USER_LIMIT,
    )
    bench.drops[made["id"]] = HOLD_PATH_STOCK
    return str(made["id"])


def per_user(bench: Bench, method: str, path: str) -> list[bytes]:
    """One request per shopper: request i is shopper i's (`path` formatted per request)."""
    host = bench.product.host
    return [build_request(method, path, host, user.token) for user in bench.users]


async def ticket_drop(bench: Bench) -> str:
    """A queue drop that has started, every shopper's ticket in its ordered pre-queue."""
    starts_at = datetime.now(UTC) + timedelta(seconds=3 + len(bench.users) / 10_000)
    drop_id = await queue_drop(bench, "Started queue", starts_at)
    seed = await drop_seed(bench.args.stores.database_url, drop_id)
    began = time.monotonic()
    replies = await seed_tickets(bench.redis_url, drop_id, seed, [u.id for u in bench.users])
    if replies.get("CREATED") != len(bench.users):
        raise RuntimeError(f"tickets not all written: {replies}")
    print(f"{len(bench.users):,} tickets in {time.monotonic() - began:.1f} s", flush=True)
    # The drop was made to start once the tickets are written; it cannot be moved, so
    # wait for it (the leader then orders the pre-queue and records it).
    await asyncio.sleep(max(starts_at.timestamp() - time.time(), 0) + START_WAIT_S)
    async with bench.http.get(
        f"{bench.product.url}/api/drops/{drop_id}/queue/me",
        headers={"Authorization": f"Bearer {bench.users[-1].token}"},
    ) as response:
        ticket = await response.json()
    if ticket.get("position") is None:
        raise RuntimeError(f"the queue has not started: {ticket}")
    return drop_id


async def access_rounds(bench: Bench) -> None:
    args = bench.args
    started = await ticket_drop(bench)
    for round_ in range(args.rounds):
        joins = await queue_drop(bench, f"Join {round_}", datetime.now(UTC) + timedelta(hours=1))
        holds = await bench.drop(f"Reserve {round_}", HOLD_PATH_STOCK)
        sides = {
            JOIN: (per_user(bench, "POST", f"/api/drops/{joins}/queue"), joins, "201"),
            RESERVE: (per_user(bench, "POST", f"/api/drops/{holds}/reserve"), holds, "201"),
            TICKET: (per_user(bench, "GET", f"/api/drops/{started}/queue/me"), None, "200"),
            DROP: (
                [build_request("GET", f"/api/drops/{started}", bench.product.host)],
                None,
                "200",
            ),
        }
        for pair in PAIRS:
            for name in pair if round_ % 2 == 0 else pair[::-1]:
                requests, drop_id, wanted = sides[name]
                distinct = name in (JOIN, RESERVE)
                phase = await bench.phase(
                    "access",
                    name,
                    bench.product,
                    requests,
                    duration=args.duration,
                    count=len(requests) if distinct else None,
                    drop_id=drop_id,
                )
                if phase.count(wanted) != phase.requests:
                    phase.notes.append(f"not every answer was {wanted}: {phase.outcomes}")
                if distinct and phase.requests >= len(requests):
                    phase.notes.append("ran out of shoppers before the end: raise --users")
        if args.floor:
            healthz = [build_request("GET", "/healthz", bench.product.host)]
            await bench.phase("access", FLOOR, bench.product, healthz, duration=args.duration)


def access_targets(phases: Sequence[Phase]) -> list[Target]:
    """Each fair-access path >= RATIO x its baseline: the medians of each side's
    throughput over the rounds."""
    found = []
    for value_name, base_name in PAIRS:
        sides = [
            [p.throughput for p in phases if p.scenario == "access" and p.name == name]
            for name in (value_name, base_name)
        ]
        value, base = (statistics.median(side) if side else None for side in sides)
        found.append(
            ratio_target(
                f"{value_name} >= {RATIO} x {base_name} (req/s, median of {len(sides[0])})",
                value,
                base,
                RATIO,
            )
        )
    return found


def per_core(phases: Sequence[Phase], name: str) -> float | None:
    """The median over the rounds of answers per CPU-second of the server: on a shared
    machine the other jobs take cores from either side, not CPU from each answer."""
    rates = [
        p.throughput / p.cpu["product"]
        for p in phases
        if p.name == name and p.cpu.get("product", 0.0) > 0.05
    ]
    return statistics.median(rates) if rates else None


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Bench, list[str]]:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
    args.stores = stores
    generators = Generators(args.gen_procs)
    product: servers.ServerProcess | None = None
    problems: list[str] = []
    try:
        product = await servers.start_product(stores, free_port(), args.workers, workdir)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await product.wait_ready(http)
            await generators.start()
            accounts = await copy_users(stores.database_url, args.users, prefix="shopper")
            users = with_tokens(accounts, stores.access_secret)
            (admin,) = await create_users(
                stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
            )
            bench = Bench.of_product(
                args, product, stores.database_url, redis_url, users, admin, http, generators
            )
            print(f"product {product.url}, {len(users):,} shoppers", flush=True)
            await access_rounds(bench)
            problems = await bench.invariant(stores.database_url)
    finally:
        generators.close()
        if product is not None and (code := await product.stop()) not in (0, None):
            print(f"product stopped with {code}:\n{product.log_tail()}", file=sys.stderr)
        await servers.drop_database(maintenance_url, stores.database_url)
        await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return bench, problems


def finish(
    args: argparse.Namespace, bench: Bench, problems: list[str], at_start: dict[str, Any]
) -> int:
    found = access_targets(bench.phases)
    at_end = machine()
    print("\nphases:", *[phase_line(p) for p in bench.phases], sep="\n")
    print("\ntargets:\n  " + "\n  ".join(target_lines(found)))
    for value_name, base_name in PAIRS:
        ratios = [
            v.throughput / b.throughput
            for v, b in zip(
                [p for p in bench.phases if p.name == value_name],
                [p for p in bench.phases if p.name == base_name],
                strict=True,
            )
            if b.throughput
        ]
        print(f"  per round, {value_name.split(':')[0]}: " + ", ".join(f"{r:.2f}" for r in ratios))
    for value_name, base_name in PAIRS:  # the server's CPU per answer, whatever the machine did
        value, base = (per_core(bench.phases, name) for name in (value_name, base_name))
        if value and base:
            print(
                f"  per core of the server, {value_name.split(':')[0]}: {value:,.0f} vs "
                f"{base:,.0f} answers per CPU-second = {value / base:.2f}x (medians)"
            )
    floor = [p.throughput for p in bench.phases if p.name == FLOOR]
    if floor:
        print(f"  {FLOOR}: median {statistics.median(floor):,.0f}/s (not a target)")
    print(f"load average: at start {at_start['load_average']}, at end {at_end['load_average']}")
    for problem in problems:
        print(f"\n!!! {problem}", file=sys.stderr)
    if not args.no_json:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"access-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        summary = {
            "argv": sys.argv,
            "args": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k != "stores"
            },
            "machine": at_start,
            "load_average_at_end": at_end["load_average"],
            "targets": [
                {"name": t.name, "measured": t.measured, "passed": t.passed} for t in found
            ],
            "per_core": {name: per_core(bench.phases, name) for pair in PAIRS for name in pair},
            "problems": problems,
        }
        write_json(path, summary, bench.phases)
        print(f"wrote {path}")
    if problems:
        print("\nINVARIANT VIOLATED: see above", file=sys.stderr)
        return 3
    return 2 if args.strict and any(t.passed is False for t in found) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    at_start = machine()
    print(f"machine: {at_start}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="access-bench-"))
    try:
        import uvloop

        bench, problems = uvloop.run(run(args, workdir))
        return finish(args, bench, problems, at_start)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
