"""Fixtures of the Lua contract tests: a Redis client, loaded scripts, stores, drops."""

from tests.support.lua_fixtures import (
    drop_store,
    hold_store,
    make_drop,
    pipelined,
    redis,
    scripts,
)

__all__ = ["drop_store", "hold_store", "make_drop", "pipelined", "redis", "scripts"]
