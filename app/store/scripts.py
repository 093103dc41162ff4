"""The Lua scripts of `lua/`, loaded once at start-up.

Each script is `SCRIPT LOAD`ed when the app starts, so a syntax error fails the
boot rather than the first drop. Calls send EVALSHA (over the process's pipelined
connection, or through redis-py's `Script` on a cluster) and, after a Redis restart
emptied the script cache (NOSCRIPT), load the script again and retry without the
caller noticing. A second flush can land between that reload and its retry; `run`
then starts over, a few times: NOSCRIPT means the script did not run, so running it
again is safe.
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from app.store.pipelined import PipelinedConnection

# The repository's lua/, installed as the package `app.lua` (setup.py), wheel or editable.
LUA_DIR: Traversable = resources.files("app.lua")
NOSCRIPT_ATTEMPTS = 3


class ScriptName(StrEnum):
    RESERVE = "reserve"
    RELEASE = "release"
    PURCHASE_CLAIM = "purchase_claim"
    PURCHASE_COMMIT = "purchase_commit"
    PURCHASE_ABORT = "purchase_abort"
    DROP_SYNC = "drop_sync"
    DROP_REBUILD = "drop_rebuild"
    DROP_COUNTERS = "drop_counters"
    RESTOCK = "restock"
    STOCK_TAKE = "stock_take"
    RATE_LIMIT = "rate_limit"
    LOGIN_CHECK = "login_check"
    LOGIN_REFUND = "login_refund"
    QUEUE_JOIN = "queue_join"
    QUEUE_TICKET = "queue_ticket"
    QUEUE_ADMIT = "queue_admit"
    DRAW_ENTER = "draw_enter"
    DRAW_ENTRY = "draw_entry"
    DRAW_RUN = "draw_run"
    DRAW_STANDBY = "draw_standby"
    DRAW_SETTLE = "draw_settle"
    CHANGE_LOG = "change_log"


INCLUDE = "-- @include "


def read_source(name: ScriptName) -> str:
    """The script's text, with each `-- @include <lib>` line replaced by lua/<lib>.lua
    (functions several scripts share; each script still runs as one atomic unit)."""
    lines = (LUA_DIR / f"{name.value}.lua").read_text(encoding="utf-8").splitlines()
    return (
        "\n".join(
            (LUA_DIR / f"{line[len(INCLUDE) :].strip()}.lua").read_text(encoding="utf-8")
            if line.startswith(INCLUDE)
            else line
            for line in lines
        )
        + "\n"
    )


class Scripts:
    """One registered `AsyncScript` per file in `lua/`.

    With a `pipelined` connection (not on Redis Cluster) `run` sends its EVALSHA there
    and reloads a flushed script itself; otherwise redis-py's `Script` does both.
    """

    def __init__(self, redis: Redis, pipelined: PipelinedConnection | None = None) -> None:
        self._redis = redis
        self._pipelined = pipelined
        self._scripts: dict[ScriptName, AsyncScript] = {
            name: redis.register_script(read_source(name)) for name in ScriptName
        }

    @property
    def pipelined(self) -> PipelinedConnection | None:
        """The process's shared pipelined connection, for a plain command on a hot path."""
        return self._pipelined

    async def load_all(self) -> None:
        """SCRIPT LOAD each one: fails start-up on a broken script."""
        for name, script in self._scripts.items():
            sha = await self._redis.script_load(script.script)
            if sha != script.sha:
                raise RuntimeError(f"lua/{name.value}.lua loaded with an unexpected SHA")

    async def run(self, name: ScriptName, keys: list[str], args: list[Any]) -> list[Any]:
        script = self._scripts[name]
        for attempt in range(1, NOSCRIPT_ATTEMPTS + 1):
            try:
                if self._pipelined is None:
                    result: list[Any] = await script(keys=keys, args=args)
                    return result
                return await self._pipelined.execute(  # type: ignore[no-any-return]
                    "EVALSHA", script.sha, len(keys), *keys, *args
                )
            except NoScriptError:
                if attempt == NOSCRIPT_ATTEMPTS:
                    raise
                if self._pipelined is not None:
                    await self._redis.script_load(script.script)
        raise AssertionError("unreachable")

    def script(self, name: ScriptName) -> AsyncScript:
        return self._scripts[name]
