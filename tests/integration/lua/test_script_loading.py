"""Loading lua/: every script loads at start-up, survives SCRIPT FLUSH, and a broken one fails."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from app.store import scripts as scripts_module
from app.store.holds import HoldStore, ReserveOutcome
from app.store.scripts import INCLUDE, LUA_DIR, ScriptName, Scripts
from tests.support.lua_fixtures import MakeDrop, new_ref, stock_take

LUA_FILES = sorted(LUA_DIR.glob("*.lua"))
# Files scripts inline with `-- @include <name>` (app/store/scripts.py): not scripts.
INCLUDED = {
    line.removeprefix(INCLUDE).strip()
    for path in LUA_FILES
    for line in path.read_text().splitlines()
    if line.startswith(INCLUDE)
}
SCRIPT_FILES = [path for path in LUA_FILES if path.stem not in INCLUDED]


async def test_load_all_loads_every_script(redis: Redis) -> None:
    loaded = Scripts(redis)
    shas = [loaded.script(name).sha for name in ScriptName]
    await redis.script_flush()
    assert await redis.script_exists(*shas) == [False] * len(shas)
    await loaded.load_all()
    assert await redis.script_exists(*shas) == [True] * len(shas)


def test_every_lua_file_is_a_script_name() -> None:
    """Or a library some script includes (and then not a script of its own)."""
    assert {path.stem for path in SCRIPT_FILES} == {name.value for name in ScriptName}
    assert INCLUDED <= {path.stem for path in LUA_FILES}
    assert not INCLUDED & {name.value for name in ScriptName}


async def test_a_call_after_script_flush_reloads_transparently(
    redis: Redis, scripts: Scripts, hold_store: HoldStore, make_drop: MakeDrop
) -> None:
    drop = await make_drop(total=2)
    await redis.script_flush()
    result = await hold_store.reserve(new_ref(drop.id), 60_000)
    assert (result.outcome, result.available) == (ReserveOutcome.OK, 1)
    assert await redis.script_exists(scripts.script(ScriptName.RESERVE).sha) == [True]
    await redis.script_flush()
    assert await stock_take(scripts, drop.id) == 1


@pytest.mark.parametrize("broken", list(ScriptName), ids=str)
async def test_a_syntax_error_fails_load_all(
    redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: ScriptName
) -> None:
    for path in LUA_FILES:
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / f"{broken.value}.lua"
    target.write_text(target.read_text() + "\nlocal = )\n")
    monkeypatch.setattr(scripts_module, "LUA_DIR", tmp_path)
    with pytest.raises(ResponseError, match=r"(?i)compil"):
        await Scripts(redis).load_all()


def _header(path: Path) -> str:
    """The comment block a script opens with."""
    lines = path.read_text().splitlines()
    assert lines, f"{path.name} is empty"
    assert lines[0].startswith("--"), f"{path.name} does not open with a comment"
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    return "\n".join(header)


@pytest.mark.parametrize("path", SCRIPT_FILES, ids=lambda path: path.name)
def test_header_names_keys_argv_and_returns(path: Path) -> None:
    header = _header(path)
    body = path.read_text()[len(header) :]
    assert "Returns" in header
    assert re.search(r"^-- KEYS\[1\] ", header, re.MULTILINE), "no KEYS in the header"
    for kind in ("KEYS", "ARGV"):
        used = set(re.findall(rf"{kind}\[(\d+)\]", body))
        documented = set(re.findall(rf"^-- {kind}\[(\d+)\]", header, re.MULTILINE))
        assert used <= documented, f"{kind} {sorted(used - documented)} undocumented"
        if kind == "ARGV" and "ARGV[" in body:
            assert documented, "ARGV used but not named in the header"


async def test_run_survives_a_flush_between_the_reload_and_its_retry(
    redis: Redis, scripts: Scripts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second flush right after the reload must not reach the caller."""
    assert scripts._pipelined is not None
    real = scripts._pipelined.execute
    flushes = 2

    async def flushed_twice(*args: Any) -> Any:
        nonlocal flushes
        if flushes:
            flushes -= 1
            raise NoScriptError("NOSCRIPT No matching script")
        return await real(*args)

    monkeypatch.setattr(scripts._pipelined, "execute", flushed_twice)
    assert await scripts.run(ScriptName.STOCK_TAKE, ["{d:00000000000000aa}:drop"], []) == [-1]
    assert flushes == 0


async def test_without_a_pipelined_connection_scripts_run_through_redis_py(
    redis: Redis,
) -> None:
    """The Redis Cluster path: redis-py's Script, with the same retry on a double flush."""
    scripts = Scripts(redis)
    await scripts.load_all()
    real = scripts._scripts[ScriptName.STOCK_TAKE]
    flushes = 2

    async def flushed_twice(**kwargs: Any) -> Any:
        nonlocal flushes
        if flushes:
            flushes -= 1
            raise NoScriptError("NOSCRIPT No matching script")
        return await real(**kwargs)

    scripts._scripts[ScriptName.STOCK_TAKE] = flushed_twice  # type: ignore[assignment]
    assert await scripts.run(ScriptName.STOCK_TAKE, ["{d:00000000000000aa}:drop"], []) == [-1]
    assert flushes == 0
    await redis.script_flush()
    assert await scripts.run(ScriptName.STOCK_TAKE, ["{d:00000000000000aa}:drop"], []) == [-1]
