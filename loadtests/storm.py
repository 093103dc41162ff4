"""Drop-storm benchmark: the product against a bare reference, same Redis, same run.

    .venv/bin/python -m loadtests.storm                       # every scenario, defaults
    .venv/bin/python -m loadtests.storm --scenarios reserve --workers 2 --duration 15

Run it from the repository root (it imports `app` and `loadtests`). What it does:

1. Stores: `--database-url` / `--redis-url` (default: DATABASE_URL / REDIS_URL), or,
   when neither is given, embedded PostgreSQL and Valkey in a temporary folder. On the
   PostgreSQL server it creates a scratch database for the run (dropped at the end
   unless `--keep`); the Redis database must be empty (or `--flush-redis`) and is
   flushed at the end unless `--keep`.
2. Servers: `sneakerdrop serve --workers N` (RATE_LIMITS=off, LOG_LEVEL=WARNING) and the
   reference (`loadtests/reference`, uvicorn with the same N workers, uvloop, httptools)
   on free ports, both with the same Redis and JWT secret; it waits for `/readyz`.
   `--target URL` uses a running product instead (then DATABASE_URL, REDIS_URL and its
   JWT_ACCESS_SECRET must be given, nothing is reset, and its RESERVATION_TTL_SECONDS
   must outlast the run: a unit that expires and is taken again would count twice in
   the oversell check).
3. Users: `--users` rows inserted into PostgreSQL in one statement, tokens minted with
   the app's TokenService (loadtests/fixtures.py); drops created through the API.
4. Scenarios (loadtests/scenarios.py), `drops` first so its listing holds only its own
   drops; `sizes` (a sized drop, and the cost of sizes against a drop without them,
   with its own target) runs only when named: `--scenarios sizes` (loadtests/sizes_bench.py
   runs it on the product alone). Closed-loop phases run `--duration` s with
   `--concurrency` connections; open-loop phases run `--fixed-duration` s at a fixed rate (`--load-fraction` of
   the peak just measured; `--curve 0.3,0.5,0.6` adds phases at those fractions, for
   latency against load). The first `--warmup` s
   of a timed phase are not counted. The load generator (loadtests/loadgen.py) runs in
   `--gen-procs` processes of its own (0: in this one). In an open-loop phase a due
   request takes the idle connection idle longest (`--reuse fifo`, the default), so
   every open connection carries a share, as a drop-day crowd of clients on their own
   connections does; `--reuse lifo` takes the one freed last, so a few connections
   carry most of the load and the workers they landed on get more of it, as behind a
   proxy that reuses a few keep-alive connections (figures before 6 Dec used it).
5. The invariant: `available + live holds + purchases == total` for every drop, Redis
   against PostgreSQL (the app's Reconciler.check), and no drop granted more holds
   than its stock. A violation prints OVERSOLD / INVARIANT VIOLATED and exits 3.
6. Report: each phase's throughput, p50 / p99 / p99.9 latency, outcome counts and the
   cores used by the product, the reference, the stores, the generator, the
   hypervisor (steal) and everything else ("other": a phase where it exceeds 0.2
   cores is flagged as not quiet; `--wait-quiet S` first waits up to S s for the rest
   of the machine to go idle); how long each server and the stores waited, runnable,
   for a core; what the product's `/metrics` saw meanwhile (loop lag, GC pauses,
   requests over 10 ms inside the app, background passes: loadtests/worker_stalls.py); the
   targets with PASS / FAIL; and into `--out-dir` (loadtests/reports/, git-ignored) a
   JSON file of every figure and a PNG of latency and throughput over time.

Exit codes: 0 done (targets may have failed: see the report; `--strict` makes a failed
target exit 2), 1 the run broke, 3 the invariant was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from app.embedded.common import free_port
from loadtests import servers
from loadtests.cpu import machine
from loadtests.fixtures import create_users
from loadtests.loadgen import REUSE_ORDERS, Generators
from loadtests.plots import storm as plot
from loadtests.report import P99_LIMIT_MS, phase_line, target_lines, targets, write_json
from loadtests.scenarios import SCENARIOS, Bench, Endpoint, size_targets
from loadtests.size_curve import MAX_FALLBACKS

REPORTS = Path(__file__).resolve().parent / "reports"
ORDER = ["drops", "reserve", "big", "sizes"]


def _fractions(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not all(0 < value <= 1.5 for value in values):
        raise argparse.ArgumentTypeError("fractions of peak lie in (0, 1.5]")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("Drop-storm benchmark: product vs reference, same Redis, same run.")
    p.add_argument("--scenarios", default="drops,reserve,big", help="any of: " + ",".join(ORDER))
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of each server")
    p.add_argument("--concurrency", type=int, default=64, help="connections of a max-rate phase")
    p.add_argument("--max-connections", type=int, default=256, help="most of a fixed-rate phase")
    p.add_argument("--duration", type=float, default=10.0, help="s per max-rate phase")
    p.add_argument("--fixed-duration", type=float, default=10.0, help="s per fixed-rate phase")
    p.add_argument(
        "--reuse",
        choices=REUSE_ORDERS,
        default="fifo",
        help="fixed-rate phases: idle connection a request takes (idle longest / last freed)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="s not counted of a timed phase")
    p.add_argument("--pause", type=float, default=1.0, help="s between phases")
    p.add_argument("--load-fraction", type=float, default=0.7, help="of peak, fixed-rate phases")
    p.add_argument("--rate", type=float, help="fixed rate (req/s) instead of the fraction")
    p.add_argument(
        "--big-fraction", type=float, default=0.5, help="of the hold path's peak, big-drop rounds"
    )
    p.add_argument(
        "--curve",
        type=_fractions,
        default=[],
        help="more fixed-rate phases of both paths at these fractions of peak (0.3,0.5)",
    )
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--stock", type=int, default=100, help="units of the storm drop")
    p.add_argument("--burst", type=int, default=0, help="reserves in the burst (0: --users)")
    p.add_argument("--purchase-share", type=float, default=0.5, help="of the storm's holds")
    p.add_argument("--cancel-share", type=float, default=0.25, help="of the storm's holds")
    p.add_argument("--live-drops", type=int, default=20, help="drops of the listing scenario")
    p.add_argument("--big-stock", type=int, default=1_000_000)
    p.add_argument("--big-holds", type=int, default=100_000)
    p.add_argument("--small-stock", type=int, default=100)
    p.add_argument("--big-rounds", type=int, default=4, help="rounds of small vs big drop")
    p.add_argument(
        "--size-fallbacks", type=int, default=2, help="sizes: fallbacks each shopper asks for"
    )
    p.add_argument("--size-rounds", type=int, default=2, help="sizes: rounds of the cost of sizes")
    p.add_argument("--hold-ttl", type=int, default=900, help="RESERVATION_TTL_SECONDS, s")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes")
    p.add_argument(
        "--wait-quiet", type=float, default=0.0, help="s to wait for an idle machine per phase"
    )
    servers.store_options(p)
    p.add_argument("--target", help="a running product's URL (nothing is started or reset)")
    p.add_argument("--no-reference", action="store_true", help="do not run the reference")
    p.add_argument("--keep", action="store_true", help="keep the scratch database and Redis data")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target fails")
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--tag", default="storm", help="file name prefix of the JSON and PNG")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="bound on the whole run")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(ORDER)
    if unknown or not chosen:
        p.error(f"unknown scenario(s) {sorted(unknown)}; choose from {ORDER}")
    args.chosen = [s for s in ORDER if s in chosen]
    if not 1 <= args.concurrency <= 4096 or not 1 <= args.max_connections <= 4096:
        p.error("--concurrency and --max-connections must be 1..4096")
    if min(args.users, args.stock, args.workers, args.big_rounds, args.small_stock) < 1:
        p.error("--users, --stock, --workers, --big-rounds and --small-stock must be positive")
    if not 0 <= args.size_fallbacks <= MAX_FALLBACKS or args.size_rounds < 0:
        p.error(f"--size-fallbacks lies in 0..{MAX_FALLBACKS}, --size-rounds is not negative")
    if args.target and not (args.database_url and args.redis_url):
        p.error("--target needs DATABASE_URL and REDIS_URL (the target's stores)")
    if args.target and not os.environ.get("JWT_ACCESS_SECRET"):
        p.error("--target needs JWT_ACCESS_SECRET (the target's)")
    return args


async def run(args: argparse.Namespace, workdir: Path) -> int:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    scratch = None
    if args.target:
        access = os.environ["JWT_ACCESS_SECRET"]
        refresh = os.environ.get("JWT_REFRESH_SECRET", access[::-1])
        stores = servers.Stores(maintenance_url, redis_url, access, refresh, args.hold_ttl)
    else:
        await servers.require_empty(redis_url, args.flush_redis)
        stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
        scratch = stores.database_url
    started: list[servers.ServerProcess] = []
    generators = Generators(args.gen_procs)
    problems: list[str] = []
    bench: Bench | None = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            if args.target:
                product = Endpoint("product", args.target.rstrip("/"))
            else:
                proc = await servers.start_product(stores, free_port(), args.workers, workdir)
                started.append(proc)
                product = Endpoint("product", proc.url)
            reference = None
            if not args.no_reference:
                proc = await servers.start_reference(stores, free_port(), args.workers, workdir)
                started.append(proc)
                reference = Endpoint("reference", proc.url)
            for proc in started:
                await proc.wait_ready(http)
            await generators.start()
            stamp = secrets.token_hex(4)
            users = await create_users(
                stores.database_url, stores.access_secret, args.users, prefix=f"storm-{stamp}"
            )
            (admin,) = await create_users(
                stores.database_url,
                stores.access_secret,
                1,
                prefix=f"storm-admin-{stamp}",
                role="admin",
            )
            print(
                f"product {product.url}, reference {reference.url if reference else '-'}, "
                f"{len(users)} users, database {stores.database_url.rsplit('/', 1)[-1]}",
                flush=True,
            )
            bench = Bench.metered(
                args,
                (product, reference),
                started,
                stores.database_url,
                redis_url,
                users,
                admin,
                http,
                generators,
            )
            for name in args.chosen:
                await SCENARIOS[name](bench)
            problems = await bench.invariant(stores.database_url)
    finally:
        generators.close()
        for proc in reversed(started):
            code = await proc.stop()
            if code not in (0, None) and proc.name == "product":
                print(f"{proc.name} stopped with {code}:\n{proc.log_tail()}", file=sys.stderr)
        if scratch and not args.keep:
            await servers.drop_database(maintenance_url, scratch)
            await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    assert bench is not None
    return finish(args, bench, problems)


def finish(args: argparse.Namespace, bench: Bench, problems: list[str]) -> int:
    found = targets(bench.phases, args.load_fraction)
    if "sizes" in args.chosen:
        found += size_targets(bench.phases)
    lines = target_lines(found)
    print("\nphases:")
    for phase in bench.phases:
        print(phase_line(phase))
    print("\ntargets:\n  " + "\n  ".join(lines))
    for problem in problems:
        print(f"\n!!! {problem}", file=sys.stderr)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = args.out_dir / f"{args.tag}-{stamp}"
    summary: dict[str, Any] = {
        "argv": sys.argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "targets": [{"name": t.name, "measured": t.measured, "passed": t.passed} for t in found],
        "problems": problems,
    }
    title = (
        f"{', '.join(args.chosen)}: {args.workers} worker(s), {args.concurrency} connections, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    write_json(base.with_suffix(".json"), {**summary, "title": title}, bench.phases)
    plot(base.with_suffix(".png"), bench.phases, title, P99_LIMIT_MS)
    print(f"\nwrote {base}.json and {base}.png")
    if problems:
        print("\nINVARIANT VIOLATED: see above", file=sys.stderr)
        return 3
    if args.strict and any(t.passed is False for t in found):
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="storm-"))
    try:
        import uvloop

        return uvloop.run(asyncio.wait_for(run(args, workdir), args.max_seconds))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
