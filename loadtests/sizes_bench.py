"""The cost of sizes: reserve on a 20-size drop against reserve on a drop without sizes.

    .venv/bin/python -m loadtests.sizes_bench
    .venv/bin/python -m loadtests.sizes_bench --size-rounds 4 --duration 10 --lua

Run it from the repository root. What it does:

1. Stores: `--database-url` / `--redis-url` (default: DATABASE_URL / REDIS_URL), or,
   when neither is given, embedded PostgreSQL and Valkey in a temporary folder. A
   scratch database for the run; the Redis database must be empty (or `--flush-redis`);
   both are emptied at the end.
2. Server: `sneakerdrop serve --workers N` (loadtests/servers.py), RATE_LIMITS=off.
3. Users: `--users` shoppers with minted tokens (loadtests/fixtures.py).
4. Phases: the storm's `sizes` scenario (loadtests/scenarios.py, on its `Bench`: the raw
   HTTP/1.1 generator, the CPU meter, the worker stalls):
   - a burst on a drop of `--stock` units over a 20-size run (US 4-13.5, most stock in
     US 8-11), every shopper asking for a size drawn from the same curve with
     `--size-fallbacks` neighbouring sizes;
   - `--size-rounds` rounds of four closed-loop phases of `--duration` s over
     `--concurrency` connections, on fresh drops each round, the order flipped each
     round: reserve without sizes (no body, as before sizes) and reserve on a 20-size
     drop asking for a sold-out size with 5 fallbacks, on the hold path (the last
     fallback has units: 201 after six sizes tried) and on the refusal path (all six
     asked are gone while other sizes are not: 409 SIZE_SOLD_OUT, against 409 SOLD_OUT).
   - `--lua` (once the server is stopped): the same two comparisons on reserve.lua
     alone, `redis-benchmark` sending EVALSHA with the app's KEYS and ARGV
     (loadtests/shard_bench.py), `--lua-rounds` rounds of `--lua-requests` calls per
     side, the order flipped each round. The server's own CPU per reserve is no measure
     of the script's cost: a worker busy-polls its Redis connection while it waits
     (app/runtime/busy_poll.py), so a longer script shows as more CPU in the worker.
5. The invariant of every drop (loadtests/invariant.py: the app's Reconciler.check,
   each size included, and no drop granted more holds than its units).
6. Report: every phase, the targets (issue 20: sized reserve >= 0.9 x the throughput of
   reserve without sizes, per path, the median of each side over the rounds), the Lua
   figures (not a target: a sized drop's share of one shard's ceiling), the machine
   with its load average at the start and the end; a JSON file in `--out-dir` (loadtests/reports/) unless `--no-json`.

Exit codes: 0 done (`--strict`: 2 when a target failed), 1 the run broke, 3 the invariant
was violated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from app.domain import SizeFact
from app.embedded.common import free_port
from app.store.client import create_redis
from app.store.drops import DropStore, RebuildMode
from app.store.holds import HoldStore
from app.store.scripts import ScriptName, Scripts
from loadtests import servers, shard_bench
from loadtests.cpu import machine
from loadtests.fixtures import create_users
from loadtests.loadgen import REUSE_ORDERS, Generators
from loadtests.report import phase_line, target_lines, write_json
from loadtests.scenarios import (
    GONE,
    HOLD_PATH_STOCK,
    Bench,
    cost_sizes,
    size_targets,
    sizes_scenario,
)
from loadtests.size_curve import MAX_FALLBACKS

REPORTS = Path(__file__).resolve().parent / "reports"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("Reserve with sizes and fallbacks against reserve without sizes.")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    p.add_argument("--concurrency", type=int, default=64, help="connections of each phase")
    p.add_argument("--duration", type=float, default=10.0, help="s per phase of a round")
    p.add_argument("--size-rounds", type=int, default=3, help="rounds of the four phases")
    p.add_argument("--size-fallbacks", type=int, default=2, help="fallbacks in the burst")
    p.add_argument("--stock", type=int, default=300, help="units of the sized burst drop")
    p.add_argument("--users", type=int, default=2000, help="shoppers (one request each, cycled)")
    p.add_argument("--hold-ttl", type=int, default=900, help="RESERVATION_TTL_SECONDS, s")
    p.add_argument("--warmup", type=float, default=1.0, help="s not counted of a phase")
    p.add_argument("--pause", type=float, default=1.0, help="s between phases")
    p.add_argument("--reuse", choices=REUSE_ORDERS, default="fifo", help="as in storm.py")
    p.add_argument("--gen-procs", type=int, default=1, help="load generator processes")
    p.add_argument(
        "--wait-quiet", type=float, default=0.0, help="s to wait for an idle machine per phase"
    )
    p.add_argument("--lua", action="store_true", help="also compare reserve.lua alone")
    p.add_argument("--lua-rounds", type=int, default=3, help="rounds of the Lua comparison")
    p.add_argument("--lua-requests", type=int, default=200_000, help="calls per Lua side")
    p.add_argument("--lua-clients", type=int, default=50, help="redis-benchmark connections")
    servers.store_options(p)
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--no-json", action="store_true", help="write no report file")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target fails")
    p.set_defaults(max_connections=256, burst=0)  # Bench.phase's and sizes_scenario's
    args = p.parse_args(argv)
    if min(args.workers, args.concurrency, args.size_rounds, args.users, args.stock) < 1:
        p.error("--workers, --concurrency, --size-rounds, --users and --stock must be positive")
    if not 0 <= args.size_fallbacks <= MAX_FALLBACKS:
        p.error(f"--size-fallbacks lies in 0..{MAX_FALLBACKS}")
    if args.lua and shutil.which("redis-benchmark") is None:
        p.error("--lua needs redis-benchmark (Debian: apt-get install redis-tools)")
    return args


@dataclasses.dataclass
class LuaFigures:
    """reserve.lua calls per second, per side, one figure per round. Not a target (the
    issue's is the API's throughput): what a sized drop does to one shard's ceiling."""

    rates: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        """Per path, the median of the 20-size side over the median without sizes."""
        found = {}
        for path in ("hold", "refused"):
            base, value = (
                statistics.median(self.rates[f"{path}, {side}"])
                for side in ("no sizes", "20 sizes")
            )
            found[path] = value / base
        return found

    def lines(self) -> list[str]:
        return [
            f"reserve.lua alone, {path}: 20 sizes, 5 fallbacks at {ratio:.2f}x the calls/s "
            f"without sizes (medians: {statistics.median(self.rates[path + ', 20 sizes']):,.0f}"
            f" vs {statistics.median(self.rates[path + ', no sizes']):,.0f}/s)"
            for path, ratio in self.ratios().items()
        ]


async def lua_comparison(args: argparse.Namespace, redis_url: str) -> LuaFigures:
    """reserve.lua on one Redis, with the app's KEYS and ARGV: a drop without sizes and a
    20-size drop asked for a sold-out size with 5 fallbacks, on both paths."""
    redis = create_redis(redis_url)
    figures = LuaFigures()
    try:
        scripts = Scripts(redis)
        await scripts.load_all()
        drops, holds = DropStore(redis, scripts), HoldStore(redis, scripts)
        sha = scripts.script(ScriptName.RESERVE).sha
        seconds, _ = await redis.time()
        starts_ms = (int(seconds) - 60) * 1000
        sides: list[tuple[str, list[str]]] = []
        for path, hold_path in (("hold", True), ("refused", False)):
            plain = shard_bench.bench_drop(HOLD_PATH_STOCK if hold_path else 0, starts_ms)
            await drops.rebuild(RebuildMode.INIT, plain, 0, {})
            facts = [SizeFact(label, units, 0) for label, units in cost_sizes(hold_path)]
            sized = dataclasses.replace(
                shard_bench.bench_drop(sum(f.total for f in facts), starts_ms),
                sizes=tuple(f.size for f in facts),
            )
            await drops.rebuild(RebuildMode.INIT, sized, 0, {}, sizes=facts)
            sides.append((f"{path}, no sizes", shard_bench.evalsha_command(holds, sha, plain.id)))
            sides.append(
                (f"{path}, 20 sizes", shard_bench.evalsha_command(holds, sha, sized.id, GONE))
            )
        bench_args = argparse.Namespace(
            requests=args.lua_requests, clients=args.lua_clients, pipeline=1
        )
        for round_ in range(args.lua_rounds):
            for name, command in sides if round_ % 2 == 0 else sides[::-1]:
                rate = await asyncio.to_thread(
                    shard_bench.redis_benchmark, redis_url, command, bench_args
                )
                figures.rates.setdefault(name, []).append(rate)
                print(f"  reserve.lua, {name:18}: {rate:10,.0f} calls/s", flush=True)
    finally:
        # Hundreds of thousands of holds: freed in the background, not within a timeout.
        await redis.flushdb(asynchronous=True)
        await redis.aclose()
    return figures


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Bench, list[str], LuaFigures]:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
    generators = Generators(args.gen_procs)
    product: servers.ServerProcess | None = None
    lua = LuaFigures()
    problems: list[str] = []
    try:
        product = await servers.start_product(stores, free_port(), args.workers, workdir)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await product.wait_ready(http)
            await generators.start()
            users = await create_users(
                stores.database_url, stores.access_secret, args.users, prefix="sized"
            )
            (admin,) = await create_users(
                stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
            )
            bench = Bench.of_product(
                args, product, stores.database_url, redis_url, users, admin, http, generators
            )
            print(f"product {product.url}, {len(users)} shoppers", flush=True)
            await sizes_scenario(bench)
            problems = await bench.invariant(stores.database_url)
        # Stopped first: its expiry listener and sweeper would work on the Lua side's holds.
        stopped, product = product, None
        if (code := await stopped.stop()) not in (0, None):
            print(f"product stopped with {code}:\n{stopped.log_tail()}", file=sys.stderr)
        if args.lua:
            lua = await lua_comparison(args, redis_url)
    finally:
        generators.close()
        if product is not None and (code := await product.stop()) not in (0, None):
            print(f"product stopped with {code}:\n{product.log_tail()}", file=sys.stderr)
        await servers.drop_database(maintenance_url, stores.database_url)
        await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return bench, problems, lua


def finish(
    args: argparse.Namespace,
    bench: Bench,
    problems: list[str],
    lua: LuaFigures,
    at_start: dict[str, Any],
) -> int:
    found = size_targets(bench.phases)
    at_end = machine()
    print("\nphases:", *[phase_line(p) for p in bench.phases], sep="\n")
    print("\ntargets:\n  " + "\n  ".join(target_lines(found)))
    if lua.rates:
        print("\n" + "\n".join(lua.lines()))
    print(f"load average: at start {at_start['load_average']}, at end {at_end['load_average']}")
    for problem in problems:
        print(f"\n!!! {problem}", file=sys.stderr)
    if not args.no_json:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"sizes-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        summary = {
            "argv": sys.argv,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": at_start,
            "load_average_at_end": at_end["load_average"],
            "targets": [
                {"name": t.name, "measured": t.measured, "passed": t.passed} for t in found
            ],
            "lua_rates": lua.rates,
            "lua_ratios": lua.ratios() if lua.rates else {},
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
    workdir = Path(tempfile.mkdtemp(prefix="sizes-bench-"))
    try:
        import uvloop

        bench, problems, lua = uvloop.run(run(args, workdir))
        return finish(args, bench, problems, lua, at_start)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
