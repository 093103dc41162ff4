"""`sneakerdrop serve` writes JSON lines only: its own, uvicorn's supervisor and workers', and
a worker's error, whose line carries the exception's type, message and traceback as fields."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from app.embedded.common import free_port
from tests.support.realtime_server import (
    START_TIMEOUT,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.stores import StoreUrls

FIELDS = {"ts", "level", "logger", "msg", "requestId", "pid"}


def _lines(log: Path) -> list[dict[str, Any]]:
    """Every line as JSON with the common fields (fails on any plain line)."""
    lines = []
    for number, text in enumerate(log.read_text(errors="replace").splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {text!r}") from None
        assert FIELDS <= line.keys(), line
        lines.append(line)
    return lines


def _env(stores: StoreUrls, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "DATA_DIR": str(tmp_path / "data"),
        "ENV": "development",
        "LOG_LEVEL": "info",
    }
    return {**env, **overrides}


async def test_supervisor_and_workers_log_json(stores: StoreUrls, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    process = await start_serve_process(port, _env(stores, tmp_path), log)  # 2 workers on 2 cores
    try:
        await wait_ready(process, f"http://127.0.0.1:{port}", log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/readyz")).status_code == 200
    finally:
        codes = await stop_serve_processes([process])
    assert codes == [0]
    lines = _lines(log)
    supervisor = [line for line in lines if line["pid"] == process.pid]
    assert any(line["logger"] == "sneakerdrop.cli" for line in supervisor)
    assert any(line["msg"].startswith("Started parent process") for line in supervisor)
    assert any(line["msg"].startswith("Stopping parent process") for line in supervisor)
    workers = {line["pid"] for line in lines if line["logger"].startswith("uvicorn")} - {
        process.pid
    }
    assert len(workers) >= 2, lines  # uvicorn's loggers in each spawned worker are JSON too


async def test_a_worker_error_is_one_json_line_naming_it(stores: StoreUrls, tmp_path: Path) -> None:
    """Nothing listens on REDIS_URL's port: each worker's start-up fails in Redis, and serve
    stops on its own with uvicorn's start-up failure code (3), not 0, so a process manager
    sees the failure."""
    port = free_port()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "serve.log"
    env = _env(stores, tmp_path, REDIS_URL=dead, REDIS_TIMEOUT_SECONDS="1")
    process = await start_serve_process(port, env, log)
    try:
        code = await asyncio.wait_for(process.wait(), START_TIMEOUT * 3)
    finally:
        await stop_serve_processes([process])
    assert code == 3, log.read_text(errors="replace")[-2000:]
    lines = _lines(log)
    errors = [line for line in lines if "error" in line]
    assert errors, lines
    line = errors[0]
    assert line["pid"] != process.pid  # a worker's
    assert line["level"] in {"error", "critical"}
    kind = line["error"].split(":", 1)[0]
    assert kind.endswith("Error"), line["error"]  # "ConnectionError: Error 111 connecting..."
    assert "Traceback (most recent call last)" in line["exc"]
