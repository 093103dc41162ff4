"""Drop reads while logins flood in: `GET /api/drops/{id}` latency, quiet and under a flood.

Starts `sneakerdrop serve` (2 workers by default, BCRYPT_ROUNDS=12, RATE_LIMITS=off so
every login pays its bcrypt, TRUSTED_PROXIES=127.0.0.1 so the flood comes from three
forwarded addresses) on a scratch database and an empty Redis (embedded ones when
DATABASE_URL and REDIS_URL are unset). One drop is read at a fixed rate for a quiet
phase, then at the same rate while wrong-password logins arrive at `--logins` a second.

    .venv/bin/python -m loadtests.login_flood --duration 20
    .venv/bin/python -m loadtests.login_flood --env RATE_LIMITS=on   # the limits' defaults

It prints the reads' p50/p95/p99 in each phase and the logins' latency and answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from app.embedded.common import free_port
from loadtests import servers
from loadtests.fixtures import create_drop, create_users
from loadtests.pacing import open_loop
from loadtests.stats import NS_PER_MS, percentile

ADDRESSES = ("198.51.100.1", "198.51.100.2", "198.51.100.3")
PASSWORD = "flood-right-password"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reads", type=float, default=50.0, help="drop reads a second")
    p.add_argument("--logins", type=float, default=7.0, help="flood logins a second")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of each phase")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    return p.parse_args(argv)


async def phase(
    http: aiohttp.ClientSession,
    flooder: aiohttp.ClientSession,
    url: str,
    drop_id: str,
    args: argparse.Namespace,
    flood: bool,
    seconds: float | None = None,
) -> tuple[list[int], Counter[int], list[int], Counter[int]]:
    reads: list[int] = []
    logins: list[int] = []
    outcomes: Counter[int] = Counter()
    read_outcomes: Counter[int] = Counter()
    addresses = itertools.cycle(ADDRESSES)

    async def read() -> None:
        start = time.perf_counter_ns()
        async with http.get(f"{url}/api/drops/{drop_id}") as response:
            await response.read()
            read_outcomes[response.status] += 1
        reads.append(time.perf_counter_ns() - start)

    async def login() -> None:
        address = next(addresses)
        body = {"email": f"flood-{address}@example.com", "password": "wrong-password"}
        start = time.perf_counter_ns()
        async with flooder.post(
            f"{url}/api/auth/login", json=body, headers={"x-forwarded-for": address}
        ) as response:
            await response.read()
            outcomes[response.status] += 1
        logins.append(time.perf_counter_ns() - start)

    duration = seconds or args.duration
    jobs = [open_loop(lambda _: read(), args.reads, seconds=duration)]
    if flood:
        jobs.append(open_loop(lambda _: login(), args.logins, seconds=duration))
    await asyncio.gather(*jobs)
    return reads, outcomes, logins, read_outcomes


def show(name: str, latencies_ns: list[int]) -> str:
    if not latencies_ns:
        return f"{name}: none"
    ordered = sorted(latencies_ns)
    p50, p95, p99 = (percentile(ordered, q) / NS_PER_MS for q in (50, 95, 99))
    return (
        f"{name}: n={len(ordered)} p50 {p50:.1f} p95 {p95:.1f} p99 {p99:.1f} "
        f"max {ordered[-1] / NS_PER_MS:.1f} ms"
    )


async def run(args: argparse.Namespace, workdir: Path) -> None:
    maintenance_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    embedded = None
    if not maintenance_url or not redis_url:
        from app.embedded import EmbeddedStores

        embedded = EmbeddedStores(workdir / "stores")
        started = await asyncio.to_thread(embedded.start, True, True)
        maintenance_url, redis_url = started[0] or "", started[1] or ""
    scratch = await servers.create_scratch_database(maintenance_url)
    stores = servers.Stores(
        scratch, redis_url, secrets.token_urlsafe(48), secrets.token_urlsafe(48), 3600
    )
    overrides = {
        "BCRYPT_ROUNDS": "12",
        "TRUSTED_PROXIES": "127.0.0.1",
        **dict(item.split("=", 1) for item in args.env),
    }
    port = free_port()
    proc = await servers.start_product(stores, port, args.workers, workdir, overrides)
    try:
        # Reads and logins on connections of their own: a slow login never holds up a read
        # in the client.
        timeout = aiohttp.ClientTimeout(total=300)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http,
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as flooder,
        ):
            await proc.wait_ready(http)
            (admin,) = await create_users(
                scratch, stores.access_secret, 1, prefix="a", role="admin"
            )
            drop = await create_drop(http, proc.url, admin.token, "Flood", 100)
            for address in ADDRESSES:  # accounts with a cost-12 hash, through the API
                body = {"email": f"flood-{address}@example.com", "password": PASSWORD}
                async with http.post(f"{proc.url}/api/auth/signup", json=body) as response:
                    assert response.status == 201, await response.text()
            await phase(
                http, flooder, proc.url, drop["id"], args, flood=False, seconds=2.0
            )  # warm-up
            quiet, _, _, quiet_reads = await phase(
                http, flooder, proc.url, drop["id"], args, flood=False
            )
            busy, outcomes, logins, busy_reads = await phase(
                http, flooder, proc.url, drop["id"], args, flood=True
            )
        print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"workers={args.workers}", overrides)
        print(show("drop reads, quiet     ", quiet), dict(quiet_reads))
        print(show("drop reads, login flood", busy), dict(busy_reads))
        print(show("logins                ", logins), dict(outcomes))
    finally:
        await proc.stop()
        await servers.drop_database(maintenance_url, scratch)
        await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="login-flood-") as workdir:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(args, Path(workdir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
