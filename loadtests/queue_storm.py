"""The queue storm: shoppers join a queue drop in the minute before its start, then poll
their ticket every 2 s, as issue 21 describes it (100,000 shoppers), at `--scale`.

    nice -n -10 .venv/bin/python -m loadtests.queue_storm --scale 0.05 \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/12 --flush-redis

Run it from the repository root. At full scale the polls alone come to 50,000 a second
(100,000 shoppers, one poll each every 2 s): more than two cores serve, so on this
machine it runs scaled down, every rate scaled with it (shoppers = 100,000 x `--scale`;
the join window, the poll period and the admission rate as at full scale). What it does:

1. Stores as loadtests/access_bench.py; `sneakerdrop serve --workers N`, RATE_LIMITS=off.
2. The shoppers by COPY with minted tokens; a queue drop of `--stock` units admitting
   `--admit-per-minute` (passes of `--pass-seconds`) that starts `--join-window` s after
   the storm begins.
3. The storm, open loop on a fixed timetable (no coordinated omission: a late answer
   counts from when its request was due): shopper i joins at a moment drawn uniformly
   within the join window (`POST /api/drops/{id}/queue`), then reads its ticket every
   `--poll-seconds` s (`GET /queue/me`) until `--after-start` s past the start. Joins and
   polls go over connection pools of their own (`--connections` each) in one generator
   process, so each has its own latency figures.
4. Checks: every join a 201 (before the start: in the pre-queue), every poll a 200; the
   queue's state afterwards (waiting, admitted at the set rate), the fairness record
   (every pre-queue ticket ordered, the seed revealed) and the invariant.
5. Report: joins and polls (throughput, p50/p99/max, the generator's own lateness), polls
   per second and their p99 before and after the start, the cores used, the machine and
   its load average; JSON in `--out-dir` unless `--no-json`.

Exit codes: 0 done, 1 the run broke, 3 a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import aiohttp

from app.embedded.common import free_port
from loadtests import servers, worker_stalls
from loadtests.access_fixtures import copy_users, create_access_drop, with_tokens
from loadtests.cpu import CpuMeter, cores_between, machine
from loadtests.fixtures import create_users
from loadtests.invariant import invariant_problems
from loadtests.loadgen import LOOKAHEAD_NS, TICK_NS, Plan, Recorded, _OpenLoop, build_request
from loadtests.report import phase_line, write_json
from loadtests.stats import Latency, Phase, summarise

REPORTS = Path(__file__).resolve().parent / "reports"
FULL_SCALE = 100_000  # issue 21's shoppers
SETUP_MARGIN_S = 3.0  # between the end of the setup and the first join
SCHEDULE_SEED = 21


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("A queue storm: joins in the minute before the start, polls.")
    p.add_argument("--scale", type=float, default=0.05, help="shoppers = 100,000 x this")
    p.add_argument("--join-window", type=float, default=60.0, help="s of joins before the start")
    p.add_argument("--poll-seconds", type=float, default=2.0, help="each shopper's poll period")
    p.add_argument("--after-start", type=float, default=30.0, help="s of polls after the start")
    p.add_argument("--admit-per-minute", type=int, default=600, help="the queue's rate")
    p.add_argument("--pass-seconds", type=int, default=300, help="the queue's pass length")
    p.add_argument("--stock", type=int, default=1000, help="units of the drop")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of the server")
    p.add_argument("--connections", type=int, default=256, help="per stream (joins, polls)")
    servers.store_options(p)
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--no-json", action="store_true", help="write no report file")
    args = p.parse_args(argv)
    args.shoppers = max(1, round(FULL_SCALE * args.scale))
    if args.join_window <= 0 or args.poll_seconds <= 0 or args.after_start < 0:
        p.error("--join-window and --poll-seconds must be positive, --after-start not negative")
    return args


@dataclass(frozen=True)
class Timetable:
    """When each request is due (ns after the storm begins) and which request it is."""

    joins: list[tuple[int, int]]  # (due, shopper)
    polls: list[tuple[int, int]]


def timetable(
    shoppers: int, join_window: float, poll_seconds: float, until: float, seed: int
) -> Timetable:
    """Shopper i joins at a moment drawn uniformly within the join window, then polls
    every `poll_seconds` until `until` s after the storm began."""
    rng = random.Random(seed)
    joins, polls = [], []
    period, end = int(poll_seconds * 1e9), int(until * 1e9)
    for shopper in range(shoppers):
        joined = int(rng.uniform(0, join_window) * 1e9)
        joins.append((joined, shopper))
        due = joined + period
        while due < end:
            polls.append((due, shopper))
            due += period
    joins.sort()
    polls.sort()
    return Timetable(joins, polls)


class _Timed(_OpenLoop):
    """The open loop of loadgen.py, on a timetable instead of a fixed rate."""

    def __init__(self, plan: Plan, dues: Sequence[tuple[int, int]]) -> None:
        super().__init__(plan)
        self.dues = dues
        self.total = len(dues)

    async def run(self) -> Recorded:
        for _ in range(min(16, self.plan.connections)):
            self.idle.append(await self.connect())
        await self.wait_until(self.plan.start_ns)
        self.record.began_ns = start = perf_counter_ns()
        for conn in self.idle:
            conn.idle_since = start
        at = 0
        while at < len(self.dues):
            horizon = perf_counter_ns() + LOOKAHEAD_NS
            offset, index = self.dues[at]
            if start + offset <= horizon:
                self.dispatch(index, start + offset)
                at += 1
                continue
            await asyncio.sleep(max(start + offset - horizon, TICK_NS) / 1e9)
        self.scheduled_all = True
        self.check_done()
        await self.finished
        return self.close()


async def _both(
    host: str,
    port: int,
    requests: list[bytes],
    table: Timetable,
    connections: int,
    start_ns: int,
    shoppers: int,
) -> tuple[Recorded, Recorded]:
    """Joins (requests[i]) and polls (requests[shoppers + i]) on pools of their own."""
    join_plan = Plan(host, port, requests, connections, rate=1.0, count=1, start_ns=start_ns)
    runs = [
        _Timed(join_plan, table.joins),
        _Timed(join_plan, [(due, shoppers + i) for due, i in table.polls]),
    ]
    try:
        joins, polls = await asyncio.gather(*(r.run() for r in runs))
    finally:
        for r in runs:
            r.close()
    return joins, polls


def drive_storm(
    host: str,
    port: int,
    requests: list[bytes],
    table: Timetable,
    connections: int,
    start_ns: int,
    shoppers: int,
) -> tuple[Recorded, Recorded]:
    """The generator process's entry point."""
    import uvloop

    return uvloop.run(_both(host, port, requests, table, connections, start_ns, shoppers))


def polls_around(polls: Recorded, start_ns: int) -> dict[str, Any]:
    """Polls answered per second and their latency, before and after the drop's start."""
    found = {}
    for name, after in (("before", False), ("after", True)):
        pairs = [
            (s, lat)
            for s, lat in zip(polls.starts, polls.latencies, strict=True)
            if (s >= start_ns) is after
        ]
        picked = [lat for _, lat in pairs]
        starts = [s for s, _ in pairs]
        span = (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else 0.0
        latency = Latency.of(picked)
        found[name] = {
            "polls": len(picked),
            "per_second": round(len(picked) / span, 1) if span else None,
            "p50_ms": latency.p50 if latency else None,
            "p99_ms": latency.p99 if latency else None,
            "max_ms": latency.max if latency else None,
        }
    return found


SLOW_P99_MS = 250.0


def slow_seconds(phase: Phase) -> list[dict[str, float]]:
    """The seconds of the storm (from its start) whose answers had a p99 over
    SLOW_P99_MS: where a stall was, to match against the server's own metrics."""
    return [
        {"second": b.second, "answers": b.count, "p99_ms": round(b.p99, 1)}
        for b in phase.buckets
        if b.p99 > SLOW_P99_MS
    ]


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, 900)
    product: servers.ServerProcess | None = None
    pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
    report: dict[str, Any] = {"shoppers": args.shoppers, "scale": args.scale}
    try:
        product = await servers.start_product(stores, free_port(), args.workers, workdir)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await product.wait_ready(http)
            accounts = await copy_users(stores.database_url, args.shoppers, prefix="queuer")
            users = with_tokens(accounts, stores.access_secret)
            (admin,) = await create_users(
                stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
            )
            until = args.join_window + args.after_start
            table = timetable(
                args.shoppers, args.join_window, args.poll_seconds, until, SCHEDULE_SEED
            )
            storm_at = datetime.now(UTC) + timedelta(seconds=SETUP_MARGIN_S + 2)
            starts_at = storm_at + timedelta(seconds=args.join_window)
            drop = await create_access_drop(
                http,
                product.url,
                admin.token,
                "Queue storm",
                access="queue",
                stock=args.stock,
                starts_at=starts_at,
                admit_per_minute=args.admit_per_minute,
                pass_seconds=args.pass_seconds,
                per_user_limit=1,
            )
            drop_id = str(drop["id"])
            host = product.url.split("://", 1)[1]
            requests = [
                build_request("POST", f"/api/drops/{drop_id}/queue", host, u.token) for u in users
            ] + [
                build_request("GET", f"/api/drops/{drop_id}/queue/me", host, u.token) for u in users
            ]
            print(
                f"drop {drop_id}: {args.shoppers:,} shoppers (scale {args.scale}), "
                f"{len(table.polls):,} polls; starts {starts_at:%H:%M:%S}",
                flush=True,
            )
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(pool, int, 0)  # the worker is up before the clock runs
            start_ns = perf_counter_ns() + int((storm_at.timestamp() - time.time()) * 1e9)
            meter = CpuMeter({"product": product.process.pid}, [stores.database_url, redis_url])
            at_start = machine()
            before, wall = meter.sample(), time.monotonic()
            stalls_before = await worker_stalls.read(http, product.url)
            joins, polls = await loop.run_in_executor(
                pool,
                drive_storm,
                *(host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]), requests, table),
                *(args.connections, start_ns, args.shoppers),
            )
            cores = cores_between(before, meter.sample(), time.monotonic() - wall)
            stalls_after = await worker_stalls.read(http, product.url)
            stalls = (
                worker_stalls.between(stalls_before, stalls_after)
                if stalls_before is not None and stalls_after is not None
                else {}
            )
            phases = []
            for name, recorded in (("join", joins), ("poll /queue/me", polls)):
                phase = summarise(
                    [recorded],
                    scenario="queue storm",
                    name=name,
                    server="product",
                    connections=args.connections,
                    rate=float(len(recorded.latencies)) / until,
                    duration=None,
                    warmup=0.0,
                    run_began_ns=start_ns,
                )
                phase.cpu = cores
                phases.append(phase)
                print(phase_line(phase), flush=True)
            drop_start_ns = start_ns + int(args.join_window * 1e9)
            async with http.get(f"{product.url}/api/drops/{drop_id}/queue") as response:
                queue = await response.json()
            async with http.get(f"{product.url}/api/drops/{drop_id}/fairness") as response:
                record = await response.json()
            problems = []
            if phases[0].count("201") != args.shoppers:
                problems.append(f"joins: {phases[0].outcomes}, {args.shoppers} x 201 expected")
            if phases[1].count("200") != phases[1].requests:
                problems.append(f"polls: {phases[1].outcomes}")
            if record.get("seed") is None or not 0 < record.get("entries", 0) <= args.shoppers:
                problems.append(f"fairness record: {record}")
            _, invariant = await invariant_problems(
                stores.database_url, redis_url, {drop_id: args.stock}, Counter()
            )
            problems += invariant
        report.update(
            {
                "drop_id": drop_id,
                "machine": at_start,
                "load_average_at_end": machine()["load_average"],
                "cores": cores,
                "polls_around_start": polls_around(polls, drop_start_ns),
                "slow_seconds": slow_seconds(phases[1]),
                "stalls": stalls,
                "queue_after": queue,
                "fairness": {k: record.get(k) for k in ("entries", "orderFixedAt")},
                "problems": problems,
                "phases": phases,
            }
        )
        return report
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if product is not None and (code := await product.stop()) not in (0, None):
            print(f"product stopped with {code}:\n{product.log_tail()}", file=sys.stderr)
        await servers.drop_database(maintenance_url, stores.database_url)
        await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def finish(args: argparse.Namespace, report: dict[str, Any]) -> int:
    phases: list[Phase] = report.pop("phases")
    print(f"\nshoppers {report['shoppers']:,} (scale {report['scale']} of {FULL_SCALE:,})")
    for name, figures in report["polls_around_start"].items():
        print(f"polls {name} the start: {figures}")
    slow = report["slow_seconds"]
    print(
        f"seconds with a poll p99 over {SLOW_P99_MS:.0f} ms: "
        + (", ".join(f"{b['second']:.0f} ({b['p99_ms']:.0f} ms)" for b in slow) or "none")
    )
    if report["stalls"]:
        print(f"server over the storm: {worker_stalls.describe(report['stalls'])}")
    print(f"queue afterwards: {report['queue_after']}")
    print(f"fairness record: {report['fairness']}")
    print(f"cores: {report['cores']}")
    print(
        f"load average: at start {report['machine']['load_average']}, "
        f"at end {report['load_average_at_end']}"
    )
    for problem in report["problems"]:
        print(f"!!! {problem}", file=sys.stderr)
    if not args.no_json:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"queue-storm-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        write_json(path, {"argv": sys.argv, **report}, phases)
        print(f"wrote {path}")
    return 3 if report["problems"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="queue-storm-"))
    try:
        import uvloop

        report = uvloop.run(run(args, workdir))
        return finish(args, report)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
