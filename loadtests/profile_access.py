"""Where the fair-access routes' CPU goes: py-spy on a server under a steady load.

    DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python -m loadtests.profile_access --path join --seconds 10

As loadtests/profile_hot_paths.py (same server, load generator and summary), for
`join` (`POST /api/drops/{id}/queue`, first joins of distinct shoppers on a queue drop
that starts in an hour) and `ticket` (`GET /api/drops/{id}/queue/me` on a started queue
drop, every shopper holding a ticket in its ordered pre-queue).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from app.embedded.common import free_port
from loadtests.access_fixtures import (
    copy_users,
    create_access_drop,
    drop_seed,
    seed_tickets,
    with_tokens,
)
from loadtests.fixtures import create_users
from loadtests.loadgen import Plan, build_request
from loadtests.profile_hot_paths import sample_under_load
from loadtests.servers import Stores, scratch_stores, start_product

REPORTS = Path(__file__).resolve().parent / "reports"


async def prepare(path: str, url: str, stores: Stores, shoppers: int) -> list[bytes]:
    host = url.split("://", 1)[1]
    (admin,) = await create_users(
        stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
    )
    users = with_tokens(
        await copy_users(stores.database_url, shoppers, prefix="shopper"), stores.access_secret
    )
    later = datetime.now(UTC) + timedelta(hours=1 if path == "join" else 0, seconds=4)
    async with aiohttp.ClientSession() as http:
        drop = await create_access_drop(
            http,
            url,
            admin.token,
            "Queue",
            access="queue",
            stock=1000,
            starts_at=later,
            admit_per_minute=1,
        )
    drop_id = str(drop["id"])
    if path == "join":
        target = f"/api/drops/{drop_id}/queue"
        return [build_request("POST", target, host, u.token) for u in users]
    seed = await drop_seed(stores.database_url, drop_id)
    await seed_tickets(stores.redis_url, drop_id, seed, [u.id for u in users])
    await asyncio.sleep(max(later.timestamp() - time.time(), 0) + 1.0)
    target = f"/api/drops/{drop_id}/queue/me"
    return [build_request("GET", target, host, u.token) for u in users]


async def profile(args: argparse.Namespace) -> int:
    async with scratch_stores("profile-access-") as (stores, workdir):
        server = await start_product(stores, free_port(), 1, workdir)
        port = int(server.url.rsplit(":", 1)[1])
        REPORTS.mkdir(exist_ok=True)
        raw = REPORTS / f"profile-{args.path}.txt"
        try:
            async with aiohttp.ClientSession() as http:
                await server.wait_ready(http)
            requests = await prepare(args.path, server.url, stores, args.shoppers)
            plan = Plan(
                "127.0.0.1",
                port,
                requests,
                args.connections,
                duration=args.seconds + 2,
                count=len(requests),
            )
            await sample_under_load(
                plan, server.process.pid, args.seconds, raw, args.path, args.top
            )
        finally:
            await server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=["join", "ticket"], default="join")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--shoppers", type=int, default=60_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    import uvloop

    return uvloop.run(profile(args))


if __name__ == "__main__":
    sys.exit(main())
