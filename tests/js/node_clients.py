"""The official socket.io-client, run by node from the tests (tests/js/clients.mjs).

`install()` runs `npm ci` here when node_modules is missing or was installed from
another package-lock.json, so a fresh clone sets itself up. `NodeClients` starts the
script and reads its JSON lines: `ready` when the crowd is done, `stock` for each
push the kept client receives, `result` last.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "clients.mjs"
_STAMP = HERE / "node_modules" / ".installed-from-lock"
NPM_TIMEOUT_S = 300


def install() -> None:
    """`npm ci` unless node_modules was installed from this very package-lock.json."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required by the Socket.IO client tests (not on PATH)")
    digest = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if _STAMP.exists() and _STAMP.read_text() == digest:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=HERE,
        check=True,
        timeout=NPM_TIMEOUT_S,
    )
    _STAMP.write_text(digest)


@dataclass
class NodeClients:
    """One run of clients.mjs: `count` clients of one mode against `url`."""

    url: str
    count: int
    mode: str  # default | polling | websocket
    expect: int  # drops in the connect snapshot
    keep_s: float = 0
    timeout_s: float = 60
    process: asyncio.subprocess.Process | None = None
    stocks: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    stderr: bytes = b""

    async def start(self) -> None:
        args = {
            "url": self.url,
            "count": self.count,
            "mode": self.mode,
            "expect": self.expect,
            "timeout": self.timeout_s,
            "keep": self.keep_s,
        }
        argv = [str(SCRIPT)]
        for key, value in args.items():
            argv += [f"--{key}", str(value)]
        self.process = await asyncio.create_subprocess_exec(
            "node",
            *argv,
            cwd=HERE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def _line(self, within: float) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), within)
        if not raw:
            await self.process.wait()
            assert self.process.stderr is not None
            self.stderr = await self.process.stderr.read()
            raise AssertionError(f"clients.mjs ended early: {self.stderr.decode()[-2000:]}")
        line: dict[str, Any] = json.loads(raw)
        return line

    async def ready(self) -> dict[str, Any]:
        """The crowd's summary (first line)."""
        line = await self._line(self.timeout_s + 30)
        assert line["event"] == "ready", line
        return line

    async def next_stock(self, within: float) -> dict[str, Any]:
        """The next push the kept client received."""
        line = await self._line(within)
        assert line["event"] == "stock", line
        return line

    async def result(self) -> dict[str, Any]:
        """The final summary, after the kept client's time (lines on the way are skipped)."""
        while True:
            line = await self._line(self.timeout_s + self.keep_s + 30)
            if line["event"] == "result":
                assert self.process is not None
                await self.process.wait()
                return line

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def run_clients(url: str, count: int, mode: str, expect: int) -> dict[str, Any]:
    """Run a crowd to the end and return its summary."""
    clients = NodeClients(url, count, mode, expect)
    await clients.start()
    try:
        return await clients.result()
    finally:
        await clients.close()
