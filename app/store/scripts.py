"""The Lua scripts of `lua/`, loaded once at start-up.

Each script is `SCRIPT LOAD`ed when the app starts, so a syntax error fails the
boot rather than the first drop. Calls go through redis-py's `Script`, which
sends EVALSHA and, after a Redis restart emptied the script cache (NOSCRIPT),
loads the script again and retries without the caller noticing. A second flush
can land between that reload and its retry; `run` then starts over, a few times:
NOSCRIPT means the script did not run, so running it again is safe.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).resolve().parents[2] / "lua"
NOSCRIPT_ATTEMPTS = 3


class ScriptName(StrEnum):
    RESERVE = "reserve"
    RELEASE = "release"
    PURCHASE_CLAIM = "purchase_claim"
    PURCHASE_COMMIT = "purchase_commit"
    PURCHASE_ABORT = "purchase_abort"
    DROP_SYNC = "drop_sync"
    DROP_REBUILD = "drop_rebuild"
    RESTOCK = "restock"
    STOCK_TAKE = "stock_take"
    RATE_LIMIT = "rate_limit"


def read_source(name: ScriptName) -> str:
    return (LUA_DIR / f"{name.value}.lua").read_text()


class Scripts:
    """One registered `AsyncScript` per file in `lua/`."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts: dict[ScriptName, AsyncScript] = {
            name: redis.register_script(read_source(name)) for name in ScriptName
        }

    async def load_all(self) -> None:
        """SCRIPT LOAD each one: fails start-up on a broken script."""
        for name, script in self._scripts.items():
            sha = await self._redis.script_load(script.script)
            if sha != script.sha:
                raise RuntimeError(f"lua/{name.value}.lua loaded with an unexpected SHA")

    async def run(self, name: ScriptName, keys: list[str], args: list[Any]) -> list[Any]:
        for attempt in range(1, NOSCRIPT_ATTEMPTS + 1):
            try:
                result: list[Any] = await self._scripts[name](keys=keys, args=args)
                return result
            except NoScriptError:
                if attempt == NOSCRIPT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def script(self, name: ScriptName) -> AsyncScript:
        return self._scripts[name]
