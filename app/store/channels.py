"""Pub/sub channel names, one set per Redis database.

Keys live in a database, but a Redis server's pub/sub channels are shared by all
of its databases. Two deployments on one server (staging on database 1, say,
production on 0) would otherwise hear each other's stock changes and push each
other's events to their clients, so each channel name carries the database number.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import parse_url


def stock_dirty_channel(database: int) -> str:
    """Where the Lua scripts announce that a drop's stock changed."""
    return f"sneakerdrop:{database}:stock-dirty"


def socketio_channel(database: int) -> str:
    """Where the Socket.IO manager passes emits between processes."""
    return f"sneakerdrop:{database}:socketio"


def database_of(redis: Any) -> int:
    """The database number a client talks to (a cluster client has only database 0)."""
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    return int(kwargs.get("db", 0) or 0)


def database_of_url(url: str) -> int:
    return int(parse_url(url).get("db", 0) or 0)
