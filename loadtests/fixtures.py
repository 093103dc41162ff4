"""Load-test fixtures: thousands of users in one statement, their tokens, drops, held units.

Users go straight into PostgreSQL in one `INSERT ... SELECT FROM unnest(...)`, all with
one bcrypt hash computed once at cost 4 (`/signup` would cost a bcrypt hash each and is
rate limited), and their access tokens are minted with the app's own `TokenService`
and the same `JWT_ACCESS_SECRET` the servers get: the servers cannot tell them from
tokens they issued themselves. Drops are created through the API (so PostgreSQL and
the Redis mirror agree); a drop's live holds can be filled in bulk by pipelining
`lua/reserve.lua` itself with the KEYS and ARGV the app passes.

As a command it prepares a Locust run against a running server:

    DATABASE_URL=... JWT_ACCESS_SECRET=... python -m loadtests.fixtures \\
        --url http://127.0.0.1:4000 --users 2000 --stock 500 \\
        --out loadtests/reports/locust-fixtures.json

`--sized` makes the drop a sized one: its stock spread over a 20-size run, most of it
in US 8-11 (loadtests/size_curve.py); the Locust shoppers then ask for sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bcrypt
import redis.asyncio as redis_asyncio

from app.config import Settings
from app.services.tokens import TokenService
from app.store.channels import database_of_url, stock_dirty_channel
from app.store.keys import new_hold_id, new_id
from app.store.scripts import ScriptName, read_source
from loadtests.reference.app import reserve_call
from loadtests.size_curve import size_run_stock

PASSWORD = "load-test-password"
ACCESS_TTL_SECONDS = 86400  # the longest the app allows: no token expires mid-run


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    token: str


def asyncpg_dsn(database_url: str) -> str:
    """asyncpg wants `postgresql://`; the app's settings say `postgresql+asyncpg://`."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


def token_service(access_secret: str, ttl_seconds: int = ACCESS_TTL_SECONDS) -> TokenService:
    settings = Settings(
        _env_file=None,
        jwt_access_secret=access_secret,
        jwt_refresh_secret=access_secret[::-1],  # never used: only access tokens are minted
        access_token_ttl_seconds=ttl_seconds,
    )
    return TokenService(settings)


async def create_users(
    database_url: str, access_secret: str, count: int, *, prefix: str, role: str = "customer"
) -> list[User]:
    """`count` users in one INSERT, each with a fresh access token (password `PASSWORD`)."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    ids = [new_id() for _ in range(count)]
    emails = [f"{prefix}-{i}@example.com" for i in range(count)]
    names = [f"{prefix}-{i}" for i in range(count)]
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "INSERT INTO users (id, email, password_hash, display_name, role) "
            "SELECT u.id, u.email, $3, u.name, $4 "
            "FROM unnest($1::text[], $2::text[], $5::text[]) AS u(id, email, name)",
            ids,
            emails,
            password_hash,
            role,
            names,
        )
    finally:
        await connection.close()
    tokens = token_service(access_secret)
    return [
        User(uid, email, name, tokens.issue_access(uid, role, secrets.token_hex(8), name))
        for uid, email, name in zip(ids, emails, names, strict=True)
    ]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def api(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None,
    body: dict[str, Any] | None = None,
) -> Any:
    """One JSON call (`token` None: anonymous); a status of 300 or more raises."""
    headers = auth(token) if token else {}
    async with http.request(method, url, json=body, headers=headers) as response:
        payload = await response.json(content_type=None) if response.status != 204 else None
        if response.status >= 300:
            raise RuntimeError(f"{method} {url} -> {response.status}: {payload}")
        return payload


async def create_drop(
    http: aiohttp.ClientSession,
    url: str,
    admin_token: str,
    name: str,
    total_stock: int,
    per_user_limit: int = 1000,
    **extra: Any,
) -> dict[str, Any]:
    """A drop live from now for a day."""
    now = datetime.now(UTC)
    body = {
        "name": name,
        "brand": "Load test",
        "priceCents": 19900,
        "totalStock": total_stock,
        "perUserLimit": per_user_limit,
        "startsAt": now.isoformat().replace("+00:00", "Z"),
        "endsAt": (now + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        **extra,
    }
    drop: dict[str, Any] = await api(http, "POST", f"{url}/api/drops", admin_token, body)
    return drop


async def seed_holds(
    redis_url: str, drop_id: str, count: int, ttl_ms: int, batch: int = 2000
) -> int:
    """`count` live holds of `count` made-up users, through reserve.lua itself, pipelined.

    Returns how many the script granted (fewer only when the drop ran out).
    """
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    channel = stock_dirty_channel(database_of_url(redis_url))
    try:
        sha = await client.script_load(read_source(ScriptName.RESERVE))
        granted = 0
        for first in range(0, count, batch):
            pipe = client.pipeline(transaction=False)
            for _ in range(first, min(first + batch, count)):
                user_id = new_id()
                reservation_id = new_hold_id(drop_id, user_id)
                keys, args = reserve_call(drop_id, user_id, reservation_id, ttl_ms, channel)
                pipe.evalsha(sha, len(keys), *keys, *args)
            granted += sum(1 for reply in await pipe.execute() if reply[0] == "OK")
        return granted
    finally:
        await client.aclose()


async def prepare_locust(args: argparse.Namespace) -> dict[str, Any]:
    stamp = secrets.token_hex(4)
    users = await create_users(
        args.database_url, args.access_secret, args.users, prefix=f"locust-{stamp}"
    )
    (admin,) = await create_users(
        args.database_url, args.access_secret, 1, prefix=f"locust-admin-{stamp}", role="admin"
    )
    extra: dict[str, Any] = {}
    if args.sized:  # the stock spread over a 20-size run, most of it in US 8-11
        sizes = size_run_stock(args.stock)
        extra["sizes"] = [{"size": label, "totalStock": units} for label, units in sizes]
    async with aiohttp.ClientSession() as http:
        drop = await create_drop(
            http,
            args.url,
            admin.token,
            f"Locust storm {stamp}",
            args.stock,
            args.per_user_limit,
            **extra,
        )
    return {
        "url": args.url,
        "dropId": drop["id"],
        "tokens": [u.token for u in users],
        "emails": [u.email for u in users],
        "password": PASSWORD,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Users, tokens and a drop for a Locust run.")
    parser.add_argument("--url", default="http://127.0.0.1:4000", help="the running server")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--stock", type=int, default=500, help="the drop's units")
    parser.add_argument("--per-user-limit", type=int, default=1)
    parser.add_argument(
        "--sized", action="store_true", help="a drop with sizes (loadtests/size_curve.py)"
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--access-secret", default=os.environ.get("JWT_ACCESS_SECRET"))
    parser.add_argument("--out", type=Path, default=Path("loadtests/reports/locust-fixtures.json"))
    args = parser.parse_args(argv)
    if not args.database_url or not args.access_secret:
        parser.error("DATABASE_URL and JWT_ACCESS_SECRET (the server's) are required")
    fixtures = asyncio.run(prepare_locust(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixtures))
    print(f"{len(fixtures['tokens'])} users and drop {fixtures['dropId']} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
