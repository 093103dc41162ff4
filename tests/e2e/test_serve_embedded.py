"""`sneakerdrop serve` as a brand-new user starts it: no DATABASE_URL, no REDIS_URL.

It starts its embedded PostgreSQL and Valkey under DATA_DIR, answers /readyz, refuses a
second instance on the same DATA_DIR, and on SIGTERM (or a terminal's Ctrl-C) stops
everything it started and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from app.embedded.common import free_port
from tests.support.processes import alive, servers_using

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def _serve_argv(port: int) -> list[str]:
    script = Path(sys.executable).with_name("sneakerdrop")
    if script.exists():
        return [str(script), "serve", "--port", str(port)]
    return [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), ENV="development")
    return env


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def _start(data_dir: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            *_serve_argv(port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=data_dir.parent,  # no stray .env
            env=_env(data_dir),
            start_new_session=True,  # its own process group, like a shell job
        )


async def _wait_ready(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n{_text(log)}")
            try:
                response = await client.get(f"http://127.0.0.1:{port}/readyz")
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz not 200 in {START_TIMEOUT}s:\n{_text(log)}")
            await asyncio.sleep(0.1)


def _server_pids(data_dir: Path) -> list[int]:
    postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    valkey = int((data_dir / "valkey" / "valkey.pid").read_text().strip())
    return [postmaster, valkey]


async def _stop(process: asyncio.subprocess.Process, how: str, log: Path) -> None:
    if how == "SIGTERM":
        process.send_signal(signal.SIGTERM)
    else:  # Ctrl-C in a terminal: SIGINT to the whole foreground process group
        os.killpg(process.pid, signal.SIGINT)
    try:
        code = await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"serve did not stop within {STOP_TIMEOUT}s:\n{_text(log)}") from None
    assert code == 0, _text(log)


async def test_serve_with_embedded_stores(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    first_log = tmp_path / "first.log"
    first = await _start(data_dir, port, first_log)
    try:
        await _wait_ready(first, port, first_log)
        pids = _server_pids(data_dir)
        assert all(alive(pid) for pid in pids)

        # A second instance on the same DATA_DIR refuses to start and touches nothing.
        second = await asyncio.create_subprocess_exec(
            *_serve_argv(free_port()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env=_env(data_dir),
        )
        _, err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 1
        message = err.decode()
        assert "another sneakerdrop" in message
        assert f"already using DATA_DIR {data_dir}" in message
        assert f"pid {first.pid}" in message
        assert "Traceback" not in message
        assert _server_pids(data_dir) == pids
        assert all(alive(pid) for pid in pids)

        await _stop(first, "SIGTERM", first_log)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert not any(alive(pid) for pid in pids)
    assert servers_using(data_dir) == []

    # The same DATA_DIR serves again, and a terminal's Ctrl-C stops it in order: the
    # stores are in their own sessions, so only sneakerdrop sees the SIGINT.
    second_log = tmp_path / "again.log"
    again = await _start(data_dir, port, second_log)
    try:
        await _wait_ready(again, port, second_log)
        pids = _server_pids(data_dir)
        await _stop(again, "SIGINT", second_log)
    finally:
        if again.returncode is None:
            again.kill()
            await again.wait()
    assert not any(alive(pid) for pid in pids)
    assert servers_using(data_dir) == []
    log = _text(second_log)
    assert "embedded Valkey stopped" in log
    assert "embedded PostgreSQL stopped" in log
