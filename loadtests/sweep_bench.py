"""Background-pass benchmark: what the sweeper's passes over many drops cost.

    .venv/bin/python -m loadtests.sweep_bench --redis-url redis://127.0.0.1:6379/13 --drops 1230

Every drop ever mirrored stays in the drop index, and the sweeper's leader process
passes over all of them every `SWEEP_INTERVAL_MS` (500 ms) on the same event loop
that serves requests, so the CPU of a pass is taken from the requests. This mirrors
`--drops` drops with `--holds` live holds each (nothing due: the holds last
`--hold-ttl` s) in an empty Redis database, then times `--passes` sweeper passes, and
reads the counters of every drop as the reconciler does: wall and CPU milliseconds of
this process per pass.

The leader's pass probes a drop only when its earliest deadline comes, and at least
once per half horizon (`--horizon`, the shorter of the hold time and the claim
timeout): with nothing due soon, it probes every drop once, then none until then. The
script times that first pass, the passes in between, and their average over half a
horizon of passes at `--interval-ms`.

The database is flushed at the end (it must be empty, or `--flush-redis`). It needs only Redis: the holds are young, but the Redis server must
have been up for more than a few seconds (see `server_started_ms`), or the sweeper
would ask PostgreSQL about them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

from app.background.sweeper import Sweeper
from app.domain import DropDefinition, from_ms
from app.store.drops import DropStore, RebuildMode
from app.store.holds import HoldStore, ReserveOutcome
from app.store.keys import HoldRef, new_id
from app.store.pipelined import PipelinedConnection
from app.store.scripts import Scripts
from loadtests.servers import bench_parser, empty_redis, store_options


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser("Cost of the sweeper's passes over many drops.")
    store_options(p, database=False)
    p.add_argument("--drops", type=int, default=1230, help="mirrored drops")
    p.add_argument("--holds", type=int, default=10, help="live holds per drop")
    p.add_argument("--hold-ttl", type=int, default=600, help="s, so that nothing falls due")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--horizon", type=int, default=30, help="s: min(hold time, claim timeout)")
    p.add_argument("--interval-ms", type=int, default=500, help="SWEEP_INTERVAL_MS")
    args = p.parse_args(argv)
    if not args.redis_url:
        p.error("--redis-url (or REDIS_URL) is required")
    if not 1 <= args.drops <= 100_000 or not 0 <= args.holds <= 1000 or args.passes < 1:
        p.error("--drops 1..100000, --holds 0..1000, --passes >= 1")
    return args


def quiet_drop(index: int, stock: int, starts_ms: int) -> DropDefinition:
    return DropDefinition(
        id=new_id(),
        name=f"Quiet drop {index}",
        brand=None,
        image_url=None,
        price_cents=10_000,
        currency="EUR",
        total_stock=max(stock, 1),
        per_user_limit=1,
        starts_at=from_ms(starts_ms),
        ends_at=None,
        cancelled=False,
    )


async def timed(work: Callable[[], Awaitable[object]], passes: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms of this process) of `passes` runs of `work`."""
    walls, cpus = [], []
    for _ in range(passes):
        wall, cpu = time.perf_counter(), time.process_time()
        await work()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


async def leaders_passes(
    lines: list[str], sweeper: Sweeper, drops: DropStore, args: argparse.Namespace
) -> None:
    """The leader's passes as the app runs them (the drop index read included): one
    first pass that probes every drop, then passes that find none due for a probe."""

    async def one_pass() -> None:
        await sweeper.sweep_pass(await drops.index())

    full_wall, full_cpu = await timed(one_pass, 1)
    lines.append(
        f"  leader's pass, every drop:    {full_wall:7.1f} ms wall, {full_cpu:7.1f} ms CPU"
    )
    wall, cpu = await timed(one_pass, args.passes)
    lines.append(f"  leader's pass, in between:    {wall:7.1f} ms wall, {cpu:7.1f} ms CPU")
    now_ms = await sweeper.hold_store.now_ms()
    per_window = max(args.horizon * 1000 // 2 // args.interval_ms, 1)
    average = (full_cpu + (per_window - 1) * cpu) / per_window
    lines.append(
        f"  leader's pass, average:       {average:7.1f} ms CPU"
        f" ({per_window} passes of {args.interval_ms} ms per half horizon of {args.horizon} s;"
        f" {sum(t > now_ms for t in sweeper.next_probe_ms.values()):,} drops planned for later)"
    )


async def run(args: argparse.Namespace) -> None:
    pipelined = PipelinedConnection(args.redis_url)
    try:
        async with empty_redis(args.redis_url, args.flush_redis) as redis:
            scripts = Scripts(redis, pipelined)
            await scripts.load_all()
            drops, holds = DropStore(redis, scripts), HoldStore(redis, scripts)
            seconds, _ = await redis.time()
            ids = []
            for i in range(args.drops):
                definition = quiet_drop(i, args.holds, (int(seconds) - 60) * 1000)
                await drops.rebuild(RebuildMode.INIT, definition, 0, {})
                ids.append(definition.id)
                users = [new_id() for _ in range(args.holds)]
                refs = [HoldRef(definition.id, u, f"{definition.id}.{u}.{new_id()}") for u in users]
                results = await asyncio.gather(
                    *(holds.reserve(r, args.hold_ttl * 1000) for r in refs)
                )
                assert all(r.outcome is ReserveOutcome.OK for r in results), results
            sweeper = Sweeper(holds, db=None)  # type: ignore[arg-type]  # nothing is due or reloaded
            lines = [
                f"{args.drops:,} drops, {args.holds} live holds each, median of {args.passes} passes"
            ]
            wall, cpu = await timed(lambda: sweeper.sweep(ids), args.passes)
            lines.append(f"  sweeper pass, every drop:     {wall:7.1f} ms wall, {cpu:7.1f} ms CPU")
            if hasattr(sweeper, "sweep_pass"):  # not before drops were probed by their deadlines
                leader = Sweeper(holds, None, args.horizon * 1000)  # type: ignore[arg-type]
                await leaders_passes(lines, leader, drops, args)

            async def one_at_a_time() -> None:
                for drop_id in ids:
                    await drops.counters(drop_id)

            wall, cpu = await timed(one_at_a_time, args.passes)
            lines.append(f"  counters, one drop at a time: {wall:7.1f} ms wall, {cpu:7.1f} ms CPU")
            if hasattr(drops, "counters_of"):  # not before the reconciler read in chunks
                wall, cpu = await timed(lambda: drops.counters_of(ids), args.passes)
                lines.append(
                    f"  counters, in chunks:          {wall:7.1f} ms wall, {cpu:7.1f} ms CPU"
                )
            print("\n".join(lines))
    finally:
        await pipelined.close()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
