"""One Redis shard's ceiling: how many reserve scripts a second one server runs.

    .venv/bin/python -m loadtests.shard_bench --redis-url redis://127.0.0.1:6379/13

Every reserve of one drop runs `lua/reserve.lua` on the shard that owns the drop's
hash slot, and Redis runs scripts one at a time, so this rate is the ceiling of one
hot drop however many API hosts there are. The script mirrors one drop (as the app
does, through `DropStore.rebuild`), then has `redis-benchmark` (Debian's
redis-tools) send `EVALSHA` of the reserve script with the app's own KEYS and ARGV:

- the hold path: stock that never runs out, a per-user limit that is never reached,
  a new reservation id per call (`__rand_int__`), so every call takes a unit and
  writes its hold, timer, due entry and user set;
- the sold-out path: the same drop with no stock left, so every call is refused
  after its checks.

The database must be empty (or `--flush-redis`); it is flushed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import shutil
import subprocess
from collections.abc import Sequence
from urllib.parse import urlsplit

from app.domain import DropDefinition, from_ms
from app.store.drops import DropStore, RebuildMode
from app.store.holds import HoldStore
from app.store.keys import HoldRef, new_id
from app.store.scripts import ScriptName, Scripts
from loadtests.servers import bench_parser, empty_redis, store_options

UNLIMITED = 10**12  # units and per-user limit that a run never exhausts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser("Reserve scripts per second on one Redis server.")
    store_options(p, database=False)
    p.add_argument("--requests", type=int, default=300_000, help="calls per path")
    p.add_argument("--clients", type=int, default=50, help="redis-benchmark connections")
    p.add_argument("--pipeline", type=int, default=1, help="calls in flight per connection")
    args = p.parse_args(argv)
    if not args.redis_url:
        p.error("--redis-url (or REDIS_URL) is required")
    if shutil.which("redis-benchmark") is None:
        p.error("redis-benchmark not found (Debian: apt-get install redis-tools)")
    return args


def bench_drop(stock: int, starts_ms: int) -> DropDefinition:
    return DropDefinition(
        id=new_id(),
        name="Shard bench",
        brand=None,
        image_url=None,
        price_cents=10_000,
        currency="EUR",
        total_stock=stock,
        per_user_limit=UNLIMITED,
        starts_at=from_ms(starts_ms),
        ends_at=None,
        cancelled=False,
    )


def evalsha_command(
    holds: HoldStore, sha: str, drop_id: str, sizes: Sequence[str] = ()
) -> list[str]:
    """EVALSHA of reserve.lua with the KEYS and ARGV the app sends, a new hold each call
    (asking for `sizes`, in order, on a sized drop)."""
    user = new_id()
    ref = HoldRef(drop_id, user, f"{drop_id}.{user}.__rand_int__")
    keys, argv = holds.reserve_args(ref, ttl_ms=60_000, sizes=sizes)
    return ["EVALSHA", sha, str(len(keys)), *keys, *(str(a) for a in argv)]


def redis_benchmark(url: str, command: list[str], args: argparse.Namespace) -> float:
    """Requests per second redis-benchmark reports for `command`."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "0"
    argv = [
        "redis-benchmark",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 6379),
        "--dbnum",
        database,
        "-n",
        str(args.requests),
        "-c",
        str(args.clients),
        "-P",
        str(args.pipeline),
        "-r",
        str(10**11),
        "--csv",
        *command,
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])  # "test","rps",...: the last line is the command's own


async def run(args: argparse.Namespace) -> None:
    async with empty_redis(args.redis_url, args.flush_redis) as redis:
        scripts = Scripts(redis)
        await scripts.load_all()
        drops, holds = DropStore(redis, scripts), HoldStore(redis, scripts)
        sha = scripts.script(ScriptName.RESERVE).sha
        seconds, _ = await redis.time()
        starts_ms = (int(seconds) - 60) * 1000
        info = await redis.info("server")
        print(
            f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info['redis_version']}"
            f", {args.clients} connections, pipeline {args.pipeline}, {args.requests:,} calls"
        )
        for path, stock in (("hold path", UNLIMITED), ("sold-out path", 0)):
            drop = bench_drop(stock, starts_ms)
            await drops.rebuild(RebuildMode.INIT, drop, 0, {})
            rate = redis_benchmark(args.redis_url, evalsha_command(holds, sha, drop.id), args)
            print(f"  reserve.lua, {path:13}: {rate:10,.0f} calls/s")


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
