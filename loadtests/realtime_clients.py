"""The real-time benchmark's Socket.IO clients: in this process or in worker processes.

`ClientGroup` is N python-socketio clients recording every `stock_update` (arrival
time, value) per drop. A `RemoteGroup` runs one in a process of its own
(`python -m loadtests.realtime_bench --worker`, driven by JSON lines on its stdin), so a
thousand clients do not share the reserve driver's event loop; `PushRecorder` takes the
server's send times from the Socket.IO manager's Redis channel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import socketio
from redis.asyncio import Redis

from app.store.channels import database_of_url, socketio_channel
from loadtests.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
STOCK_EVENT = "stock_update"
PIPE_LIMIT = 1 << 28  # one phase's events travel from a client process as one JSON line

Events = list[tuple[float, int]]  # one client's (arrival time, availableStock), in order


class LoopLag:
    """How late a 10 ms sleep wakes up: the event loop's backlog."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.samples.append(time.monotonic() - before - 0.01)

    def take(self) -> dict[str, float]:
        ordered, self.samples = sorted(self.samples), []
        if not ordered:
            return {"p99": 0.0, "max": 0.0}
        return {"p99": percentile(ordered, 99), "max": ordered[-1]}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class ClientGroup:
    """`count` python-socketio clients recording every `stock_update` of the given drops."""

    def __init__(self, url: str, count: int, drop_ids: Sequence[str], batch: int) -> None:
        self.url = url
        self.count = count
        self.batch = batch
        self.drop_index = {drop_id: i for i, drop_id in enumerate(drop_ids)}
        # events[drop][client]: (arrival, value) in arrival order
        self.events: list[list[Events]] = [[[] for _ in range(count)] for _ in drop_ids]
        self.last: list[list[int]] = [[-1] * len(drop_ids) for _ in range(count)]
        self.clients: list[socketio.AsyncClient] = []
        self.connected: list[bool] = []
        self.disconnects = 0
        self.closing = False
        self.lag = LoopLag()
        # wait_for_value: the (drop, value) awaited, how many clients hold it, all of them
        self.target: tuple[int, int] | None = None
        self.holding = 0
        self.expected = 0
        self.all_holding = asyncio.Event()

    def _client(self, index: int) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False)
        drop_index = self.drop_index
        last = self.last[index]
        per_drop = [client_events[index] for client_events in self.events]

        def on_stock(data: dict[str, Any]) -> None:
            at = time.time()
            drop = drop_index.get(data.get("dropId", ""))
            if drop is None:
                return
            value = int(data["availableStock"])
            per_drop[drop].append((at, value))
            if last[drop] != value and self.target == (drop, value):
                self.holding += 1
                if self.holding >= self.expected:
                    self.all_holding.set()
            last[drop] = value

        def on_disconnect(*_args: Any) -> None:
            if not self.closing:
                self.disconnects += 1

        sio.on(STOCK_EVENT, on_stock)
        sio.on("disconnect", on_disconnect)
        return sio

    async def _connect(self, sio: socketio.AsyncClient) -> bool:
        try:
            await sio.connect(
                self.url, transports=["websocket"], socketio_path="socket.io", wait_timeout=30
            )
        except (socketio.exceptions.ConnectionError, OSError, TimeoutError):
            return False
        return True

    async def connect_all(self) -> dict[str, Any]:
        started = time.monotonic()
        for first in range(0, self.count, self.batch):
            batch = [self._client(i) for i in range(first, min(first + self.batch, self.count))]
            self.clients += batch
            self.connected += await asyncio.gather(*(self._connect(c) for c in batch))
        self.lag.start()
        return {
            "connected": sum(self.connected),
            "failed": self.count - sum(self.connected),
            "seconds": time.monotonic() - started,
        }

    async def wait_for_value(self, drop: int, value: int, within: float) -> int:
        """Wait until every connected client holds `value` for `drop`; how many do."""
        self.target = (drop, value)
        self.holding = sum(
            1
            for ok, last in zip(self.connected, self.last, strict=True)
            if ok and last[drop] == value
        )
        self.expected = sum(self.connected)
        self.all_holding.clear()
        if self.holding < self.expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_holding.wait(), within)
        self.target = None
        return self.holding

    def take(self, drop: int) -> dict[str, Any]:
        """This drop's events (then forgotten here), disconnects so far and the loop lag."""
        events, self.events[drop] = self.events[drop], [[] for _ in range(self.count)]
        return {
            "events": [e for e, ok in zip(events, self.connected, strict=True) if ok],
            "disconnects": self.disconnects,
            "still_connected": sum(1 for c in self.clients if c.connected),
            "lag": self.lag.take(),
        }

    async def close(self) -> None:
        self.closing = True
        await self.lag.stop()
        live = [c for c in self.clients if c.connected]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.disconnect() for c in live), return_exceptions=True), 60
            )


class Group(Protocol):
    name: str
    pids: list[int]

    async def connect(self) -> dict[str, Any]: ...
    async def wait_for_value(self, drop: int, value: int, within: float) -> int: ...
    async def take(self, drop: int) -> dict[str, Any]: ...
    async def stop(self) -> None: ...


class LocalGroup:
    """Clients in this process, sharing its event loop with the reserve driver."""

    def __init__(self, name: str, clients: ClientGroup) -> None:
        self.name = name
        self.pids = [os.getpid()]
        self.clients = clients

    async def connect(self) -> dict[str, Any]:
        return await self.clients.connect_all()

    async def wait_for_value(self, drop: int, value: int, within: float) -> int:
        return await self.clients.wait_for_value(drop, value, within)

    async def take(self, drop: int) -> dict[str, Any]:
        return self.clients.take(drop)

    async def stop(self) -> None:
        await self.clients.close()


class RemoteGroup:
    """Clients in a worker process (this module with --worker), driven by JSON lines."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.pids = [process.pid]

    @classmethod
    async def start(
        cls, name: str, url: str, count: int, drop_ids: Sequence[str], batch: int
    ) -> RemoteGroup:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadtests.realtime_bench",
            "--worker",
            "--url",
            url,
            "--clients",
            str(count),
            "--connect-batch",
            str(batch),
            "--drops",
            ",".join(drop_ids),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=PIPE_LIMIT,
        )
        return cls(name, process)

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {self.name} exited ({self.process.returncode})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._read()

    async def connect(self) -> dict[str, Any]:
        return await self._read()  # the worker connects on start and reports once

    async def wait_for_value(self, drop: int, value: int, within: float) -> int:
        answer = await self._ask({"cmd": "wait", "drop": drop, "value": value, "within": within})
        reached: int = answer["reached"]
        return reached

    async def take(self, drop: int) -> dict[str, Any]:
        return await self._ask({"cmd": "take", "drop": drop})

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(RuntimeError, ConnectionError):
                await self._ask({"cmd": "stop"})
        try:
            await asyncio.wait_for(self.process.wait(), 90)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def worker_main(url: str, count: int, batch: int, drop_ids: list[str]) -> None:
    """The --worker side of RemoteGroup: connect, then answer commands on stdin."""
    clients = ClientGroup(url, count, drop_ids, batch)

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    answer(await clients.connect_all())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=PIPE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "wait":
                reached = await clients.wait_for_value(
                    command["drop"], command["value"], command["within"]
                )
                answer({"reached": reached})
            elif command["cmd"] == "take":
                answer(clients.take(command["drop"]))
            else:
                break
    finally:
        await clients.close()
    answer({"closed": True})


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal non-negative counts."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def start_groups(
    args: argparse.Namespace, url: str, drop_ids: list[str]
) -> dict[str, list[Group]]:
    load: list[Group]
    if args.client_procs == 0:
        load = [LocalGroup("clients", ClientGroup(url, args.clients, drop_ids, args.connect_batch))]
    else:
        load = [
            await RemoteGroup.start(f"clients{i}", url, n, drop_ids, args.connect_batch)
            for i, n in enumerate(split(args.clients, args.client_procs))
            if n
        ]
    probes: list[Group] = []
    if args.probe_clients:
        probes = [await RemoteGroup.start("probes", url, args.probe_clients, drop_ids, 10)]
    return {"load": load, "probe": probes}


class PushRecorder:
    """The server's side of the rate: when each `stock_update` left the broadcaster.

    Emits cross processes on the Socket.IO manager's Redis channel, published right
    after the emitting process queued the event to its own clients, so the message
    times are the send times, free of any client's delivery jitter.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.channel = socketio_channel(database_of_url(redis_url))
        self.sent: dict[str, list[float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def _run(self) -> None:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(self.channel)
            self._subscribed.set()
            async for message in pubsub.listen():
                arrived = time.time()
                with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
                    emit = json.loads(message["data"])
                    if emit.get("event") == STOCK_EVENT and emit.get("room") is None:
                        self.sent.setdefault(emit["data"][0]["dropId"], []).append(arrived)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.redis.aclose()
