"""Where a hot path's CPU goes: py-spy on a product server under a steady load.

    python -m loadtests.profile_hot_paths --path hold --seconds 10

Starts ``sneakerdrop serve`` (one worker) against DATABASE_URL / REDIS_URL (a scratch
database is made and dropped; the Redis database must be empty, it is flushed at the
end), seeds what the path needs, drives it with the storm's load generator from
``--connections`` connections, and samples the server with ``py-spy record`` meanwhile.
Prints the functions that hold the most samples, by own time and by inclusive time,
and writes the raw (collapsed) stacks to loadtests/reports/ (any flame-graph tool reads
them).

Paths: ``hold`` (every reserve succeeds), ``sold-out`` (every reserve is refused) and
``drops`` (``GET /api/drops`` with 20 live drops). ``--rate N`` sends N requests a
second (open loop, as in the storm's fixed-rate phases) instead of as many as the
connections take.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

import aiohttp

from app.embedded.common import free_port
from loadtests.cpu import py_spy, py_spy_record
from loadtests.fixtures import create_drop, create_users
from loadtests.loadgen import Plan, build_request, drive
from loadtests.servers import (
    Stores,
    scratch_stores,
    start_product,
)

REPORTS = Path(__file__).resolve().parent / "reports"
PER_USER_LIMIT = 1000


def top_functions(collapsed: str, count: int = 25) -> tuple[list[tuple[str, int]], ...]:
    """(own, inclusive) sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        if "Condition.wait" in stack.rsplit(";", 1)[-1]:
            continue  # an idle worker thread
        frames = [
            frame.split(" (", 1)[0] + " " + frame.rsplit("/", 1)[-1] for frame in stack.split(";")
        ]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own.most_common(count), inclusive.most_common(count), [("total", total)]


async def prepare(path: str, url: str, stores: Stores) -> list[bytes]:
    """The requests the load generator cycles through."""
    host = url.split("://", 1)[1]
    (admin,) = await create_users(
        stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
    )
    shoppers = await create_users(stores.database_url, stores.access_secret, 200, prefix="shopper")
    async with aiohttp.ClientSession() as http:
        if path == "drops":
            for n in range(20):
                await create_drop(http, url, admin.token, f"Drop {n}", 1000)
            return [build_request("GET", "/api/drops", host)]
        stock = 10_000_000 if path == "hold" else 1
        drop = await create_drop(http, url, admin.token, "Hot drop", stock, PER_USER_LIMIT)
    target = f"/api/drops/{drop['id']}/reserve"
    requests = [build_request("POST", target, host, user.token) for user in shoppers]
    if path == "sold-out":
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}{target}", headers={"Authorization": f"Bearer {shoppers[0].token}"}
            ) as response:
                assert response.status == 201, await response.text()
    return requests


async def sample_under_load(
    plan: Plan, pid: int, seconds: int, raw: Path, label: str, top: int
) -> None:
    """Drive `plan` and, once the server is warm, sample process `pid` with py-spy for
    `seconds`; print the throughput and the `top` functions by own and inclusive time."""
    load = asyncio.create_task(drive(plan))
    await asyncio.sleep(1.0)  # connections open and the server warm before sampling
    spy = py_spy()
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    collapsed = await py_spy_record(spy, pid, seconds, raw, 250)
    await collapsed.wait()
    recorded = await load
    elapsed = (recorded.ended_ns - recorded.began_ns) / 1e9
    count = len(recorded.latencies)
    print(
        f"{label}: {count} requests in {elapsed:.1f} s = {count / elapsed:,.0f}/s; "
        f"{dict(recorded.outcomes)}"
    )
    own, inclusive, ((_, total),) = top_functions(await asyncio.to_thread(raw.read_text), top)
    print(f"\n{total} samples. Own time:")
    for name, n in own:
        print(f"  {100 * n / total:5.1f}%  {name}")
    print("\nInclusive time:")
    for name, n in inclusive:
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\nwrote {raw}")


async def profile(args: argparse.Namespace) -> int:
    async with scratch_stores("profile-") as (stores, workdir):
        return await profile_in(args, stores, workdir)


async def profile_in(args: argparse.Namespace, stores: Stores, workdir: Path) -> int:
    port = free_port()
    server = await start_product(stores, port, 1, workdir)
    REPORTS.mkdir(exist_ok=True)
    raw = REPORTS / f"profile-{args.path}.txt"
    try:
        async with aiohttp.ClientSession() as http:
            await server.wait_ready(http)
        requests = await prepare(args.path, server.url, stores)
        plan = Plan(
            "127.0.0.1",
            port,
            requests,
            args.connections,
            rate=args.rate,
            duration=args.seconds + 2,
        )
        await sample_under_load(plan, server.process.pid, args.seconds, raw, args.path, args.top)
    finally:
        await server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=["hold", "sold-out", "drops"], default="hold")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--rate",
        type=float,
        help="requests/s, open loop (default: closed loop, as fast as it goes)",
    )
    args = parser.parse_args()
    import uvloop

    return uvloop.run(profile(args))


if __name__ == "__main__":
    sys.exit(main())
