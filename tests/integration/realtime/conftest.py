"""A Redis client and loaded scripts, as the Lua contract tests have them."""

from tests.support.lua_fixtures import pipelined, redis, scripts

__all__ = ["pipelined", "redis", "scripts"]
