"""Real-time stock push benchmark: N Socket.IO clients, a reserve storm, change-to-client latency.

    python -m loadtests.realtime_bench --clients 1000 --reserves 2000 --rate 20,100,500,max

Method
------
1. Starts ``sneakerdrop serve --port P --workers W`` as a subprocess in a temporary
   ``DATA_DIR`` (embedded PostgreSQL and Valkey, unless ``DATABASE_URL`` / ``REDIS_URL``
   are set in the environment), with ``RATE_LIMITS=off``, ``BCRYPT_ROUNDS=4`` and hold
   and token lifetimes long enough that nothing expires during the run; waits for
   ``/readyz``. Everything listens on 127.0.0.1 only.
2. Logs the admin in, creates one drop per phase (``totalStock`` = that phase's reserve
   count, ``perUserLimit`` 1000) and signs up ``ceil(reserves / 1000)`` users: the point
   is stock changes, not auth.
3. Connects ``--clients`` python-socketio clients (WebSocket transport) in batches,
   spread over ``--client-procs`` worker processes (0: in this process, beside the
   reserve driver), plus ``--probe-clients`` in a process of their own: a few clients
   whose event loop is not busy with a thousand others, to tell the server's share of
   the latency from the load generator's.
4. Each phase fires that phase's reserves with aiohttp at a target rate (open loop, at
   most ``--concurrency`` in flight) or, for ``max``, from ``--concurrency`` loops as
   fast as the server answers. Then it waits (at most ``--settle`` s) for every client
   to hold the drop's final value.
5. Timing. A successful reserve's ``createdAt`` is the Redis ``TIME`` of the
   ``reserve.lua`` run that took the unit (millisecond resolution): the server-side
   moment of the change. Redis runs the scripts one at a time, so the k-th smallest
   ``createdAt`` is when the drop's available stock became ``total - k``. Clients stamp
   each ``stock_update`` with ``time.time()`` when its handler runs (the same host clock).
   Two latencies come out of that:

   * change visibility (the headline): for every change and every client, the first
     arrival of an event carrying that value or a lower one, minus the change time.
     Coalescing counts here: a change made just after a push waits for the next one.
   * event age: for every event a client receives, its arrival minus the time of the
     change that produced the value it carries.

   Event rate, per client and drop: the mean rate over the client's events of the
   phase and the most events in any 1-second window. On the server's side: the push
   count from ``sneakerdrop_stock_updates_total`` on ``/metrics``, and the send time
   of every push, taken from the Socket.IO manager's Redis channel (each emit is
   published there right after the emitting process queued it to its own clients).
6. CPU cores used per phase by the API processes, the stores, each client process, the
   driver and everything else on the machine ("other": a figure taken while other jobs
   ran is flagged), and the client event loops' lag, to show what limits a run. With
   ``--wait-quiet S`` each phase first waits (up to S s) for the rest of the machine
   to go idle. With ``--gc-log``, a ``sitecustomize.py`` on the server's PYTHONPATH
   logs every full garbage collection of the API processes (each one stops the event
   loop), and each phase reports their count and length.
7. The verdict: every client connected and none dropped; p99 change visibility and
   event age of the load clients <= ``--target-ms`` in every phase; per drop, at most
   ``--target-rate`` sends in any 1-second window of the server's send times, and a
   mean rate <= ``--target-rate`` at every client. The most events in any 1-second
   window at a client is reported beside it: an event delayed on its way (a busy
   client loop, a pause in the server) lands next to the following one.

The run is bounded: at most ``--reserves`` per phase, at most ``--max-phase-seconds``
of reserves per rated phase, ``--max-seconds`` in all; it stops the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import psutil
import socketio
from redis.asyncio import Redis

from app.embedded import running_store_urls
from app.embedded.common import free_port
from app.store.channels import database_of_url, socketio_channel
from loadtests.cpu import (
    listening_pids,
    machine_busy_seconds,
    own_cpu_seconds,
    tree_cpu_seconds,
    wait_quiet,
)
from loadtests.servers import ServerProcess, serve_argv
from loadtests.stats import percentile

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
HOST = "127.0.0.1"
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
USER_PASSWORD = "bench-user-password"
PER_USER_LIMIT = 1000  # the API's maximum perUserLimit
STOCK_EVENT = "stock_update"
PIPE_LIMIT = 1 << 28  # one phase's events travel from a client process as one JSON line

T = TypeVar("T")
Events = list[tuple[float, int]]  # one client's (arrival time, availableStock), in order


# --- pure helpers: statistics and timing maths ---------------------------------------


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary | None:
        ordered = sorted(values)
        if not ordered:
            return None
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
            mean=sum(ordered) / len(ordered),
        )


def parse_timestamp(text: str) -> float:
    """An API timestamp (ISO-8601 UTC with a `Z`) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_rates(text: str) -> list[float | None]:
    """`20,100,max` -> [20.0, 100.0, None]; None means as fast as the server answers."""
    rates: list[float | None] = []
    for part in text.split(","):
        item = part.strip().lower()
        if item == "max":
            rates.append(None)
            continue
        rate = float(item)
        if not rate > 0:
            raise ValueError(f"a rate must be positive or 'max', got {part!r}")
        rates.append(rate)
    if not rates:
        raise ValueError("no rate given")
    return rates


def phase_size(reserves: int, rate: float | None, max_seconds: float) -> int:
    """How many reserves a phase fires: `reserves`, capped at `max_seconds` of a finite rate."""
    if rate is None:
        return reserves
    return max(1, min(reserves, math.floor(rate * max_seconds)))


def event_ages(events: Events, total: int, changes: Sequence[float]) -> tuple[list[float], int]:
    """Arrival minus the time of the change that produced each event's value.

    `changes[k - 1]` is when the stock became `total - k`. Events still carrying `total`
    (the connect snapshot) are skipped; returns the ages and how many events carried a
    value no change explains.
    """
    ages: list[float] = []
    unexplained = 0
    for at, value in events:
        k = total - value
        if k == 0:
            continue
        if 1 <= k <= len(changes):
            ages.append(at - changes[k - 1])
        else:
            unexplained += 1
    return ages, unexplained


def visibility_delays(
    events: Events, total: int, changes: Sequence[float]
) -> tuple[list[float], int]:
    """For each change, the delay until this client first held a value reflecting it.

    Stock only falls during a reserve storm, so an event carrying `total - k` or less
    reflects change k. Returns the delays and how many changes the client never saw.
    """
    delays: list[float] = []
    j = 0
    for k, changed_at in enumerate(changes, start=1):
        value = total - k
        while j < len(events) and events[j][1] > value:
            j += 1
        if j == len(events):
            return delays, len(changes) - k + 1
        delays.append(events[j][0] - changed_at)
    return delays, 0


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most of the ascending `times` that fall in any half-open window [t, t + window)."""
    best = 0
    i = 0
    for j, t in enumerate(times):
        while times[i] <= t - window:
            i += 1
        best = max(best, j - i + 1)
    return best


def mean_rate(times: Sequence[float], min_span: float = 1.0) -> float | None:
    """Events per second over the span of the ascending `times`: (n - 1) / span.

    None for a span under `min_span` seconds, where one early or late event swings it.
    """
    if len(times) < 2 or times[-1] - times[0] < min_span:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def min_gap(times: Sequence[float]) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else None


# --- Socket.IO clients ----------------------------------------------------------------


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


# --- the server under test -----------------------------------------------------------


# With --gc-log, a sitecustomize.py on the server's PYTHONPATH logs every full (gen 2)
# collection of every API process: Python stops the event loop for as long as it runs.
GC_HOOK = """\
import gc, os, time

_folder = os.environ.get("REALTIME_BENCH_GC_LOG")
if _folder:
    _log = open(os.path.join(_folder, f"gc-{os.getpid()}.log"), "a", buffering=1)
    _started = [0.0]

    def _on_gc(phase, info):
        if phase == "start":
            _started[0] = time.perf_counter()
        elif info["generation"] == 2:
            _log.write(f"{time.time():.3f} {time.perf_counter() - _started[0]:.4f}\\n")

    gc.callbacks.append(_on_gc)
"""


def gc_pauses(folder: Path | None, start: float, end: float) -> list[float]:
    """Durations (s) of the full collections logged between epoch `start` and `end`."""
    pauses: list[float] = []
    for log in folder.glob("gc-*.log") if folder else []:
        for line in log.read_text().splitlines():
            at, took = (float(x) for x in line.split())
            if start <= at <= end:
                pauses.append(took)
    return pauses


def server_env(data_dir: Path, interval_ms: int | None, gc_log: Path | None) -> dict[str, str]:
    path = str(ROOT) if gc_log is None else f"{gc_log}{os.pathsep}{ROOT}"
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "DATA_DIR": str(data_dir),
        "RATE_LIMITS": "off",
        "BCRYPT_ROUNDS": "4",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "WARNING",
        "RESERVATION_TTL_SECONDS": "86400",  # no hold expires (and moves stock) mid-run
        "ACCESS_TOKEN_TTL_SECONDS": "86400",
        "ENV": "development",
    }
    if interval_ms is not None:
        env["STOCK_BROADCAST_INTERVAL_MS"] = str(interval_ms)
    if gc_log is not None:
        env["REALTIME_BENCH_GC_LOG"] = str(gc_log)
    return env


class Server(ServerProcess):
    """`sneakerdrop serve` (loadtests/servers.py), with its DATA_DIR and GC log folder."""

    data_dir: Path
    gc_log: Path | None

    @classmethod
    async def launch(
        cls, workdir: Path, port: int, workers: int, interval_ms: int | None, gc_log: bool
    ) -> Server:
        data_dir = workdir / "data"
        gc_folder = workdir / "gc" if gc_log else None
        if gc_folder is not None:
            gc_folder.mkdir()
            (gc_folder / "sitecustomize.py").write_text(GC_HOOK)
        env = server_env(data_dir, interval_ms, gc_folder)
        server = await cls.start("serve", serve_argv(port, workers), env, port, workdir)
        server.data_dir, server.gc_log = data_dir, gc_folder
        return server

    def store_pids(self) -> list[int]:
        """The embedded stores' processes, found by the ports in DATA_DIR/running.json."""
        try:
            running = json.loads((self.data_dir / "running.json").read_text())
        except (OSError, ValueError):
            return []
        urls = [running.get(key) or "" for key in ("database_url", "redis_url")]
        with contextlib.suppress(ValueError):  # a malformed port
            return listening_pids(*urls)
        return []


# --- CPU accounting ------------------------------------------------------------------


class CpuMeter:
    def __init__(self, server: Server, groups: Sequence[Group]) -> None:
        self.server = server
        self.groups = groups
        self.stores = server.store_pids()

    def sample(self) -> dict[str, float]:
        exclude = set(self.stores)
        sample = {
            "api": tree_cpu_seconds([self.server.process.pid], exclude),
            "stores": tree_cpu_seconds(self.stores, set()),
            "driver": own_cpu_seconds(),
        }
        for group in self.groups:
            if group.pids != [os.getpid()]:
                sample[group.name] = tree_cpu_seconds(group.pids, set())
        ours = sum(sample.values())
        sample["other"] = machine_busy_seconds() - ours  # anything else on the machine
        return sample


# --- the HTTP side: setup and the reserve driver -------------------------------------


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=body, headers=headers) as response:
        payload: dict[str, Any] = await response.json(content_type=None)
        if response.status not in (200, 201):
            raise RuntimeError(f"POST {url} -> {response.status}: {payload}")
        return payload


async def pushes_so_far(http: aiohttp.ClientSession, url: str) -> float | None:
    """`sneakerdrop_stock_updates_total` from /metrics (all workers)."""
    for attempt in range(3):
        try:
            async with http.get(f"{url}/metrics") as response:
                text = await response.text()
            break
        except aiohttp.ClientError:  # a keep-alive connection closed under us: try again
            if attempt == 2:
                raise
    for line in text.splitlines():
        if line.startswith("sneakerdrop_stock_updates_total "):
            return float(line.split()[1])
    return None


@dataclass(frozen=True)
class Reserve:
    sent: float
    done: float
    status: int
    created: float | None  # the server's createdAt (Redis TIME), for a 201


async def reserve_once(http: aiohttp.ClientSession, url: str, drop_id: str, token: str) -> Reserve:
    sent = time.time()
    try:
        async with http.post(
            f"{url}/api/drops/{drop_id}/reserve", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            body = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return Reserve(sent, time.time(), 0, None)
    done = time.time()
    created = parse_timestamp(body["createdAt"]) if status == 201 else None
    return Reserve(sent, done, status, created)


async def storm(
    http: aiohttp.ClientSession,
    url: str,
    drop_id: str,
    tokens: Sequence[str],
    count: int,
    rate: float | None,
    concurrency: int,
) -> list[Reserve]:
    """`count` reserves at `rate` per second (open loop), or as fast as possible (None)."""
    results: list[Reserve] = []

    async def one(i: int) -> None:
        results.append(await reserve_once(http, url, drop_id, tokens[i % len(tokens)]))

    if rate is None:
        numbers = iter(range(count))

        async def loop() -> None:
            for i in numbers:  # shared: each number is taken once
                await one(i)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return results

    in_flight = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task[None]] = []

    async def bounded(i: int) -> None:
        try:
            await one(i)
        finally:
            in_flight.release()

    started = time.monotonic()
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        tasks.append(asyncio.create_task(bounded(i)))
    await asyncio.gather(*tasks)
    return results


# --- one phase -----------------------------------------------------------------------


@dataclass
class GroupFigures:
    clients: int
    disconnects: int
    still_connected: int
    got_final: int
    visibility: Summary | None
    never_seen: int
    event_age: Summary | None
    unexplained_events: int
    events_per_client: float
    rate_mean: Summary | None  # per client: events/s over its span
    max_in_1s: int
    min_gap: float | None
    loop_lag_p99: float
    loop_lag_max: float


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


@dataclass
class PhaseFigures:
    rate: float | None
    reserves: int
    ok: int
    failed: dict[str, int]
    storm_seconds: float
    achieved_rate: float
    response: Summary | None
    server_pushes: float | None
    server_max_in_1s: int | None  # the most sends of the drop in any 1-second window
    server_min_gap: float | None
    gc_pauses: Summary | None  # with --gc-log: the API's full collections in the phase
    cpu_cores: dict[str, float]
    groups: dict[str, GroupFigures] = field(default_factory=dict)


def group_figures(
    takes: Sequence[dict[str, Any]], reached: int, total: int, changes: Sequence[float]
) -> GroupFigures:
    delays: list[float] = []
    ages: list[float] = []
    rates: list[float] = []
    never_seen = unexplained = events = max_window = 0
    gap: float | None = None
    clients = 0
    for take in takes:
        for raw in take["events"]:
            clients += 1
            client_events: Events = sorted((float(t), int(v)) for t, v in raw)
            seen, missed = visibility_delays(client_events, total, changes)
            delays += seen
            never_seen += missed
            aged, odd = event_ages(client_events, total, changes)
            ages += aged
            unexplained += odd
            times = [t for t, v in client_events if v < total]
            events += len(times)
            max_window = max(max_window, max_in_window(times))
            rate = mean_rate(times)
            if rate is not None:
                rates.append(rate)
            least = min_gap(times)
            if least is not None:
                gap = least if gap is None else min(gap, least)
    return GroupFigures(
        clients=clients,
        disconnects=sum(t["disconnects"] for t in takes),
        still_connected=sum(t["still_connected"] for t in takes),
        got_final=reached,
        visibility=Summary.of(delays),
        never_seen=never_seen,
        event_age=Summary.of(ages),
        unexplained_events=unexplained,
        events_per_client=events / clients if clients else 0.0,
        rate_mean=Summary.of(rates),
        max_in_1s=max_window,
        min_gap=gap,
        loop_lag_p99=max((t["lag"]["p99"] for t in takes), default=0.0),
        loop_lag_max=max((t["lag"]["max"] for t in takes), default=0.0),
    )


async def run_phase(
    http: aiohttp.ClientSession,
    server: Server,
    recorder: PushRecorder,
    groups: dict[str, list[Group]],
    meter: CpuMeter,
    drop: int,
    drop_id: str,
    tokens: Sequence[str],
    count: int,
    rate: float | None,
    args: argparse.Namespace,
) -> PhaseFigures:
    every = [g for members in groups.values() for g in members]
    pushes_before = await pushes_so_far(http, server.url)
    cpu_before, wall_before, epoch_before = meter.sample(), time.monotonic(), time.time()
    started = time.monotonic()
    reserves = await storm(http, server.url, drop_id, tokens, count, rate, args.concurrency)
    storm_seconds = time.monotonic() - started
    changes = sorted(r.created for r in reserves if r.status == 201 and r.created is not None)
    final = count - len(changes)
    reached = await asyncio.gather(*(g.wait_for_value(drop, final, args.settle) for g in every))
    cpu_after, wall_after = meter.sample(), time.monotonic()
    pushes_after = await pushes_so_far(http, server.url)
    reached_by = dict(zip((g.name for g in every), reached, strict=True))
    failed: dict[str, int] = {}
    for r in reserves:
        if r.status != 201:
            failed[str(r.status)] = failed.get(str(r.status), 0) + 1
    pushes = None if pushes_before is None or pushes_after is None else pushes_after - pushes_before
    sent = recorder.sent.get(drop_id, [])
    figures = PhaseFigures(
        rate=rate,
        reserves=count,
        ok=len(changes),
        failed=failed,
        storm_seconds=storm_seconds,
        achieved_rate=count / storm_seconds if storm_seconds else 0.0,
        response=Summary.of(r.done - r.sent for r in reserves),
        server_pushes=pushes,
        server_max_in_1s=max_in_window(sent) if sent else None,
        server_min_gap=min_gap(sent),
        gc_pauses=Summary.of(gc_pauses(server.gc_log, epoch_before, time.time())),
        cpu_cores={
            name: (cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0))
            / (wall_after - wall_before)
            for name in cpu_after
        },
    )
    for kind, members in groups.items():
        if not members:
            continue
        takes = await asyncio.gather(*(g.take(drop) for g in members))
        figures.groups[kind] = group_figures(
            takes, sum(reached_by[g.name] for g in members), count, changes
        )
    return figures


# --- report --------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def summary_line(label: str, summary: Summary | None) -> str:
    if summary is None:
        return f"    {label}: no samples"
    return (
        f"    {label}: p50 {ms(summary.p50)}, p90 {ms(summary.p90)}, p99 {ms(summary.p99)}, "
        f"max {ms(summary.max)} ({summary.count:,} samples)"
    )


def phase_report(figures: PhaseFigures) -> str:
    rate = "max" if figures.rate is None else f"{figures.rate:g}/s"
    failed = ", ".join(f"{n} x {status}" for status, n in figures.failed.items()) or "none"
    pushes = "-" if figures.server_pushes is None else f"{figures.server_pushes:.0f}"
    lines = [
        f"phase rate={rate}: {figures.reserves} reserves, {figures.ok} ok, failed {failed}; "
        f"{figures.storm_seconds:.2f} s = {figures.achieved_rate:.0f} reserves/s",
        summary_line("reserve response", figures.response),
        f"    stock_update pushes for the drop (server /metrics): {pushes}; sent, most in any "
        f"1 s: {figures.server_max_in_1s}, smallest gap {ms(figures.server_min_gap)}",
        "    CPU cores used: "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in figures.cpu_cores.items()),
    ]
    if figures.gc_pauses is not None:
        pauses = figures.gc_pauses
        lines.append(
            f"    API full GC pauses: {pauses.count}, p50 {ms(pauses.p50)}, max {ms(pauses.max)}, "
            f"{ms(pauses.mean * pauses.count)} in all"
        )
    if figures.cpu_cores.get("other", 0.0) > 0.2:
        lines.append(
            "    WARNING: other processes used CPU during this phase; figures are not quiet"
        )
    for kind, g in figures.groups.items():
        rate_mean = (
            "-"
            if g.rate_mean is None
            else f"mean {g.rate_mean.mean:.2f}/s, highest client {g.rate_mean.max:.2f}/s"
        )
        lines += [
            f"  {kind} clients: {g.clients} measured, {g.disconnects} disconnects, "
            f"{g.still_connected} still connected, {g.got_final} got the final value",
            summary_line("change visibility", g.visibility)
            + (f", {g.never_seen} change x client pairs never seen" if g.never_seen else ""),
            summary_line("event age", g.event_age)
            + (f", {g.unexplained_events} unexplained" if g.unexplained_events else ""),
            f"    events per client and drop: {g.events_per_client:.1f} in all; rate {rate_mean}; "
            f"most in any 1 s: {g.max_in_1s}; smallest gap {ms(g.min_gap)}",
            f"    client event loop lag: p99 {ms(g.loop_lag_p99)}, max {ms(g.loop_lag_max)}",
        ]
    return "\n".join(lines)


def verdict(
    phases: Sequence[PhaseFigures], clients: int, connected: int, target_ms: float, max_rate: float
) -> list[str]:
    """The three targets, judged on the load clients' worst phase.

    The rate is judged on what the server sent (the most sends of a drop in any
    1-second window, from the Socket.IO channel) and on each client's mean rate. A
    client's own 1-second window is reported beside it: one event delayed on its way
    (a busy client loop, a pause in the server) lands next to the following one, which
    says nothing about how often the server sent.
    """

    def worst(kind: str) -> dict[str, float]:
        groups = [p.groups[kind] for p in phases if kind in p.groups]
        return {
            "disconnects": max((g.disconnects for g in groups), default=0),
            "p99": max((g.visibility.p99 for g in groups if g.visibility), default=math.inf),
            "age_p99": max((g.event_age.p99 for g in groups if g.event_age), default=math.inf),
            "window": max((g.max_in_1s for g in groups), default=0),
            "mean": max((g.rate_mean.max for g in groups if g.rate_mean), default=0.0),
        }

    def met(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    load = worst("load")
    probes = worst("probe") if any("probe" in p.groups for p in phases) else None
    sent_window = max((p.server_max_in_1s or 0 for p in phases), default=0)
    recorded = all(p.server_max_in_1s is not None for p in phases)
    latency_ok = max(load["p99"], load["age_p99"]) * 1000 <= target_ms
    rate_ok = recorded and sent_window <= max_rate and load["mean"] <= max_rate
    lines = [
        f"{clients} clients: {connected} connected, {load['disconnects']:.0f} disconnected "
        f"during the run: {met(connected == clients and load['disconnects'] == 0)}",
        f"p99 change-to-client <= {target_ms:g} ms (load clients, worst phase): visibility "
        f"{ms(load['p99'])}, event age {ms(load['age_p99'])}: {met(latency_ok)}",
        f"<= {max_rate:g} events/s per drop: sent, most in any 1 s "
        f"{sent_window if recorded else '-'}; highest client mean {load['mean']:.2f}/s: "
        f"{met(rate_ok)}",
    ]
    windows = f"load {load['window']:.0f}"
    if probes:
        windows += f", probe {probes['window']:.0f}"
        lines.append(
            f"(probe clients: visibility p99 {ms(probes['p99'])}, event age p99 "
            f"{ms(probes['age_p99'])})"
        )
    lines.append(f"(received, most in any 1 s at a client: {windows})")
    return lines


# --- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000, help="Socket.IO clients (1..5000)")
    parser.add_argument("--reserves", type=int, default=2000, help="reserves per phase")
    parser.add_argument(
        "--rate", default="20,100,500,max", help="reserves/s per phase, comma-separated; max"
    )
    parser.add_argument("--max-phase-seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=64, help="reserves in flight at most")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers")
    parser.add_argument("--client-procs", type=int, default=1, help="0: clients in this process")
    parser.add_argument("--probe-clients", type=int, default=5, help="0: no probe process")
    parser.add_argument("--connect-batch", type=int, default=50)
    parser.add_argument("--settle", type=float, default=15.0, help="s to wait for final values")
    parser.add_argument("--interval-ms", type=int, help="STOCK_BROADCAST_INTERVAL_MS")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, help="s to wait for an idle machine per phase"
    )
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the whole run")
    parser.add_argument("--target-ms", type=float, default=250.0)
    parser.add_argument("--target-rate", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--gc-log", action="store_true", help="log the API processes' full GC pauses"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--drops", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker:
        if not 1 <= args.clients <= 5000:
            parser.error("--clients must be 1..5000")
        if not 1 <= args.reserves <= 100_000:
            parser.error("--reserves must be 1..100000")
        if not 1 <= args.concurrency <= 1024 or not 0 <= args.client_procs <= 16:
            parser.error("--concurrency must be 1..1024 and --client-procs 0..16")
        try:
            args.rates = parse_rates(args.rate)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def redis_url_of(server: Server) -> str:
    """The Redis the server uses: REDIS_URL, or its embedded one."""
    given = os.environ.get("REDIS_URL")
    if given:
        return given
    running = running_store_urls(server.data_dir)
    if running is None or running[1] is None:
        raise RuntimeError("the server's embedded Redis is not running")
    return running[1]


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


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def prepare(
    http: aiohttp.ClientSession, url: str, args: argparse.Namespace
) -> tuple[list[str], list[str], list[int]]:
    """One drop per phase and enough users for the largest: (drop ids, tokens, phase sizes)."""
    login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    admin = (await post_json(http, f"{url}/api/auth/login", login))["accessToken"]
    sizes = [phase_size(args.reserves, rate, args.max_phase_seconds) for rate in args.rates]
    drop_ids: list[str] = []
    for i, (rate, size) in enumerate(zip(args.rates, sizes, strict=True)):
        body = {
            "name": f"bench phase {i} ({'max' if rate is None else f'{rate:g}/s'})",
            "priceCents": 19900,
            "totalStock": size,
            "perUserLimit": PER_USER_LIMIT,
        }
        drop_ids.append((await post_json(http, f"{url}/api/drops", body, admin))["id"])
    stamp = time.time_ns()
    tokens: list[str] = []
    for i in range(math.ceil(max(sizes) / PER_USER_LIMIT)):
        body = {"email": f"bench{stamp}-{i}@example.com", "password": USER_PASSWORD}
        tokens.append((await post_json(http, f"{url}/api/auth/signup", body))["accessToken"])
    return drop_ids, tokens, sizes


async def bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    port = args.port or free_port()
    print(f"machine: {json.dumps(machine())}", flush=True)
    stores = [name for name in ("DATABASE_URL", "REDIS_URL") if os.environ.get(name)]
    print(f"stores: {', '.join(stores) + ' from the environment' if stores else 'embedded'}")
    server = await Server.launch(workdir, port, args.workers, args.interval_ms, args.gc_log)
    url = server.url
    groups: dict[str, list[Group]] = {}
    recorder: PushRecorder | None = None
    phases: list[PhaseFigures] = []
    connect: dict[str, dict[str, Any]] = {}
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(
            timeout=timeout,
            # uvicorn closes a keep-alive connection idle for 5 s: let go of ours first
            connector=aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=2.0),
        ) as http:
            await server.wait_ready(http)
            recorder = PushRecorder(redis_url_of(server))
            await recorder.start()
            drop_ids, tokens, sizes = await prepare(http, url, args)
            groups = await start_groups(args, url, drop_ids)
            every = [g for members in groups.values() for g in members]
            for group, info in zip(
                every, await asyncio.gather(*(g.connect() for g in every)), strict=True
            ):
                connect[group.name] = info
                print(f"{group.name}: {json.dumps(info)}", flush=True)
            meter = CpuMeter(server, every)
            for drop, (rate, count) in enumerate(zip(args.rates, sizes, strict=True)):
                await asyncio.sleep(1.0)  # let the previous phase's last pushes drain
                if args.wait_quiet:
                    other = await wait_quiet(meter, args.wait_quiet)
                    print(f"other load before the phase: {other:.2f} cores", flush=True)
                figures = await run_phase(
                    http,
                    server,
                    recorder,
                    groups,
                    meter,
                    drop,
                    drop_ids[drop],
                    tokens,
                    count,
                    rate,
                    args,
                )
                phases.append(figures)
                print(phase_report(figures), flush=True)
    except BaseException:
        if server.process.returncode is not None:
            print(f"serve exited with {server.process.returncode}", file=sys.stderr)
        print(f"serve log (last lines):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if recorder is not None:
            await recorder.stop()
        for members in groups.values():
            for group in members:
                with contextlib.suppress(Exception):
                    await group.stop()
        code = await server.stop()
        if code != 0:
            print(f"serve stopped with {code}:\n{server.log_tail()}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    connected = sum(
        info["connected"] for name, info in connect.items() if not name.startswith("probe")
    )
    lines = verdict(phases, args.clients, connected, args.target_ms, args.target_rate)
    print("targets:\n  " + "\n  ".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "argv": sys.argv,
                    "machine": machine(),
                    "connect": connect,
                    "phases": [asdict(p) for p in phases],
                    "targets": lines,
                },
                indent=2,
            )
        )
    return 0


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run(lambda: worker_main(args.url, args.clients, args.connect_batch, args.drops.split(",")))
        return 0

    async def bounded() -> int:
        return await asyncio.wait_for(bench(args), args.max_seconds)

    result: int = run(bounded)
    return result


if __name__ == "__main__":
    sys.exit(main())
