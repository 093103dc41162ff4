"""Fixtures of the fair-access benchmarks: many users by COPY, queue and draw drops,
tickets and entries written through the app's own scripts, a Redis of the run's own.

- Users go into PostgreSQL with one COPY (100,000 in a second or two: `access_entries`
  has a foreign key to `users`, so the draw's record needs real rows), all with one
  bcrypt hash at cost 4; tokens are minted only when asked for (`with_tokens`).
- Tickets and entries are written by pipelining `queue_join.lua` / `draw_enter.lua`
  with the KEYS and ARGV the app passes (app/store/access.py), the entry ids and rank
  keys made as app/services/access.py makes them from the drop's seed (read from
  PostgreSQL): what the routes would write, without 100,000 HTTP calls.
- `dedicated_redis`: a `redis-server` on a free port for one run, so SLOWLOG (which is
  per instance, not per database) sees this run's commands alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bcrypt
import redis.asyncio as redis_asyncio

from app import fairness
from app.embedded.common import free_port
from app.store.keys import DropKeys, new_id
from app.store.scripts import ScriptName, Scripts
from loadtests.fixtures import PASSWORD, User, api, asyncpg_dsn, create_users, token_service
from loadtests.size_curve import size_run_stock

PIPELINE_BATCH = 2000  # script calls per pipelined round trip
REDIS_READY_SECONDS = 10.0


@dataclass(frozen=True)
class Account:
    """A user row without a token (the draw's entrants never call the API)."""

    id: str
    email: str


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def copy_users(database_url: str, count: int, *, prefix: str) -> list[Account]:
    """`count` customers in one COPY (password `PASSWORD`)."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    accounts = [Account(new_id(), f"{prefix}-{i}@example.com") for i in range(count)]
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.copy_records_to_table(
            "users",
            records=[
                (a.id, a.email, password_hash, f"{prefix}-{i}", "customer")
                for i, a in enumerate(accounts)
            ],
            columns=("id", "email", "password_hash", "display_name", "role"),
        )
    finally:
        await connection.close()
    return accounts


def with_tokens(accounts: Sequence[Account], access_secret: str) -> list[User]:
    """Access tokens the server accepts (same secret), minted here."""
    tokens = token_service(access_secret)
    return [
        User(a.id, a.email, name, tokens.issue_access(a.id, "customer", secrets.token_hex(8), name))
        for a in accounts
        for name in (a.email.split("@", 1)[0],)
    ]


async def drop_seed(database_url: str, drop_id: str) -> bytes:
    """The drop's secret fairness seed, as the server keeps it."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        seed = await connection.fetchval("SELECT fairness_seed FROM drops WHERE id = $1", drop_id)
    finally:
        await connection.close()
    if seed is None:
        raise RuntimeError(f"drop {drop_id} has no fairness seed (not a queue or draw drop?)")
    return bytes(seed)


async def create_access_drop(
    http: aiohttp.ClientSession,
    url: str,
    admin_token: str,
    name: str,
    *,
    access: str,
    stock: int = 0,
    sizes: Sequence[tuple[str, int]] = (),
    starts_at: datetime | None = None,
    closes_at: datetime | None = None,
    admit_per_minute: int = 600,
    pass_seconds: int = 300,
    claim_seconds: int = 600,
    per_user_limit: int = 1000,
) -> dict[str, Any]:
    """A queue, draw or open drop through the API; it ends a day from now."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "name": name,
        "brand": "Load test",
        "priceCents": 19900,
        "perUserLimit": per_user_limit,
        "startsAt": iso_z(starts_at or now),
        "endsAt": iso_z(now + timedelta(days=1)),
        "access": access,
    }
    if sizes:
        body["sizes"] = [{"size": label, "totalStock": units} for label, units in sizes]
    else:
        body["totalStock"] = stock
    if access == "queue":
        body["queue"] = {"admitPerMinute": admit_per_minute, "passSeconds": pass_seconds}
    elif access == "draw":
        assert closes_at is not None, "a draw drop needs closes_at"
        body["draw"] = {"closesAt": iso_z(closes_at), "claimSeconds": claim_seconds}
    drop: dict[str, Any] = await api(http, "POST", f"{url}/api/drops", admin_token, body)
    return drop


def _batches(count: int, size: int = PIPELINE_BATCH) -> Iterator[range]:
    for first in range(0, count, size):
        yield range(first, min(first + size, count))


async def seed_entries(
    redis_url: str,
    drop_id: str,
    seed: bytes,
    user_ids: Sequence[str],
    sizes: Sequence[Sequence[str]] = (),
) -> dict[str, int]:
    """Draw entries of `user_ids` through draw_enter.lua, pipelined; `sizes[i]` are user
    i's labels (size first, then fallbacks) on a sized drop. Returns the replies counted
    ("CREATED" for each new entry)."""
    k = DropKeys(drop_id)
    keys = [k.drop, k.sizes, k.draw_users, k.draw_entries, k.draw_order]
    return await _pipelined(
        redis_url,
        ScriptName.DRAW_ENTER,
        keys,
        seed,
        user_ids,
        lambda i: list(sizes[i]) if sizes else [],
    )


async def seed_tickets(
    redis_url: str, drop_id: str, seed: bytes, user_ids: Sequence[str]
) -> dict[str, int]:
    """Queue tickets of `user_ids` through queue_join.lua, pipelined."""
    k = DropKeys(drop_id)
    keys = [k.drop, k.holds, k.q, k.q_users, k.q_tix, k.q_pre, k.q_late]
    return await _pipelined(redis_url, ScriptName.QUEUE_JOIN, keys, seed, user_ids, lambda _: [])


async def _pipelined(
    redis_url: str,
    name: ScriptName,
    keys: list[str],
    seed: bytes,
    user_ids: Sequence[str],
    extra: Any,
) -> dict[str, int]:
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    replies: dict[str, int] = {}
    try:
        scripts = Scripts(client)
        await scripts.load_all()
        sha = scripts.script(name).sha
        for batch in _batches(len(user_ids)):
            pipe = client.pipeline(transaction=False)
            for i in batch:
                entry_id = fairness.new_entry_id()
                rank = fairness.rank_key(seed, entry_id)
                pipe.evalsha(sha, len(keys), *keys, user_ids[i], entry_id, rank, *extra(i))
            for reply in await pipe.execute():
                replies[str(reply[0])] = replies.get(str(reply[0]), 0) + 1
    finally:
        await client.aclose()
    return replies


@contextlib.asynccontextmanager
async def dedicated_redis(workdir: Path) -> AsyncIterator[str]:
    """A `redis-server` of this run alone (no persistence); yields its URL (db 0)."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH: give --redis-url")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis_asyncio.Redis.from_url(url)
        deadline = time.monotonic() + REDIS_READY_SECONDS
        try:
            while True:
                try:
                    await client.ping()
                    break
                except (ConnectionError, OSError, redis_asyncio.ConnectionError):
                    if time.monotonic() >= deadline or process.returncode is not None:
                        raise RuntimeError(f"{binary} did not start on port {port}") from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def redis_version(redis_url: str) -> str:
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return (
        f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info['redis_version']}"
    )


async def prepare_locust(args: argparse.Namespace) -> dict[str, Any]:
    """Users with tokens and a queue or draw drop, for loadtests/locust_access.py."""
    stamp = secrets.token_hex(4)
    accounts = await copy_users(args.database_url, args.users, prefix=f"locust-{stamp}")
    users = with_tokens(accounts, args.access_secret)
    (admin,) = await create_users(
        args.database_url, args.access_secret, 1, prefix=f"locust-admin-{stamp}", role="admin"
    )
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        drop = await create_access_drop(
            http,
            args.url,
            admin.token,
            f"Locust {args.access} {stamp}",
            access=args.access,
            stock=args.stock,
            sizes=size_run_stock(args.stock) if args.sized else (),
            starts_at=now + timedelta(seconds=args.starts_in),
            closes_at=now + timedelta(seconds=args.starts_in + args.closes_in),
            admit_per_minute=args.admit_per_minute,
            pass_seconds=args.pass_seconds,
            per_user_limit=1,
        )
    return {"url": args.url, "dropId": drop["id"], "tokens": [u.token for u in users]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Users, tokens and a queue or draw drop.")
    parser.add_argument("--url", default="http://127.0.0.1:4000", help="the running server")
    parser.add_argument("--access", choices=["queue", "draw"], default="queue")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--stock", type=int, default=500, help="the drop's units")
    parser.add_argument("--sized", action="store_true", help="a drop over the 20-size run")
    parser.add_argument("--starts-in", type=float, default=60.0, help="s to startsAt")
    parser.add_argument("--closes-in", type=float, default=60.0, help="draw: s startsAt->closesAt")
    parser.add_argument("--admit-per-minute", type=int, default=600)
    parser.add_argument("--pass-seconds", type=int, default=300)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--access-secret", default=os.environ.get("JWT_ACCESS_SECRET"))
    parser.add_argument("--out", type=Path, default=Path("loadtests/reports/locust-access.json"))
    args = parser.parse_args(argv)
    if not args.database_url or not args.access_secret:
        parser.error("DATABASE_URL and JWT_ACCESS_SECRET (the server's) are required")
    if args.access == "draw":
        args.starts_in = min(args.starts_in, 0.0)  # a draw takes entries from startsAt on
    made = asyncio.run(prepare_locust(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(made))
    print(f"{len(made['tokens'])} users and {args.access} drop {made['dropId']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
