"""A lean HTTP/1.1 load generator: raw asyncio connections, responses parsed by httptools.

It shares two cores with the servers it measures, so a request must cost it as little
CPU as possible: requests are prebuilt bytes, responses are parsed in protocol
callbacks by httptools (the C parser uvicorn uses), there is no coroutine or task per
request, and results go into flat arrays. aiohttp spends several times more CPU per
request, which would be taken from the server under test, and more from the cheaper
server of a comparison than from the dearer one.

Two ways to drive a server (`Plan`):

- closed loop (`rate` None): `connections` keep-alive connections, each sending its
  next request as soon as the previous answer is in: the most the server does for that
  many concurrent clients. Latency counts from the send.
- open loop (`rate`): request i is due at start + i / rate, whatever the server does.
  Latency counts from the due time (or from the send, if sent up to `LOOKAHEAD_NS`
  early), so a server that falls behind shows the queueing it causes (no coordinated
  omission). Connections open as needed, up to `connections`; a due request that finds
  none free waits in a queue. `lags` records how late the generator itself sent each one.

`drive(plan)` runs a plan in the running event loop; `run_plan(plan)` does it in a
fresh uvloop, for a worker process. Several processes split one plan by `part`/`parts`
(request i goes to process i mod parts) and start together at `start_ns`
(`time.perf_counter_ns` is CLOCK_MONOTONIC: one clock for every process of the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from array import array
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from time import perf_counter_ns
from typing import Literal, cast, get_args

import httptools

LOOKAHEAD_NS = 1_000_000  # the event loop's timers tick in milliseconds
TICK_NS = 1_000_000  # the shortest sleep between sends of an open loop
Reuse = Literal["lifo", "fifo"]
REUSE_ORDERS: tuple[Reuse, ...] = get_args(Reuse)
IDLE_REUSE_NS = 3_000_000_000  # uvicorn drops a keep-alive connection idle for 5 s
WARM_CONNECTIONS = 16  # an open loop opens these before its first request is due


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    requests: Sequence[bytes]  # request i is requests[i % len(requests)]
    connections: int
    rate: float | None = None  # requests per second (open loop); None: closed loop
    duration: float | None = None  # seconds of sending, at most
    count: int | None = None  # requests, at most (an open loop needs one of the two)
    start_ns: int = 0  # when to begin (perf_counter_ns); 0: once connected
    # Open loop: which idle connection a due request takes. "lifo": the one freed last,
    # so a few connections carry the load; "fifo": the one idle longest, so every open
    # connection carries a share, as a crowd of clients on their own connections does
    # (the storm's default; the other tools keep "lifo", as their figures were measured).
    reuse: Reuse = "lifo"
    part: int = 0
    parts: int = 1


@dataclass
class Recorded:
    """One process's share of a phase: per request, when it counted from and how long."""

    starts: array[int] = field(default_factory=lambda: array("q"))  # perf_counter_ns
    latencies: array[int] = field(default_factory=lambda: array("q"))  # ns
    lags: array[int] = field(default_factory=lambda: array("q"))  # open loop: sent - due, ns
    firsts: array[int] = field(default_factory=lambda: array("q"))  # each connection's first, ns
    outcomes: Counter[str] = field(default_factory=Counter)
    began_ns: int = 0
    ended_ns: int = 0
    connections: int = 0


def build_request(
    method: str, path: str, host: str, token: str | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if method != "GET" or body:
        lines.append(f"Content-Length: {len(body)}")
    if body:
        lines.append("Content-Type: application/json")  # every body the API reads is JSON
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def outcome(status: int, body: bytes | bytearray) -> str:
    """`201`, or the status and the problem `code` of an error (`409 SOLD_OUT`)."""
    if status < 300:
        return str(status)
    at = body.find(b'"code":"')
    if at < 0:
        return str(status)
    end = body.find(b'"', at + 8)
    return f"{status} {body[at + 8 : end].decode(errors='replace')}"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; tells its run when an answer is complete or it is lost."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False
        self.answers = 0
        self.counted_from = 0
        self.idle_since = 0
        self.status = 0
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, index: int, counted_from: int) -> None:
        assert self.transport is not None
        self.busy = True
        self.counted_from = counted_from
        self.status = 0
        self.body.clear()
        self.transport.write(self.run.requests[index % len(self.run.requests)])

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.status >= 300:
            self.body += body

    def on_message_complete(self) -> None:
        self.busy = False
        if not self.parser.should_keep_alive():
            self.close()  # before `answered`, which would send the next request on it
        self.run.answered(self, outcome(self.status, self.body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.lost(self, exc)

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Run:
    """What closed and open loops share: the connections and the record."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.requests = plan.requests
        self.loop = asyncio.get_running_loop()
        self.record = Recorded()
        self.conns: set[_Conn] = set()
        self.finished: asyncio.Future[None] = self.loop.create_future()

    async def connect(self) -> _Conn:
        _, conn = await self.loop.create_connection(
            lambda: _Conn(self), self.plan.host, self.plan.port
        )
        self.conns.add(conn)
        self.record.connections += 1
        return conn

    def answered(self, conn: _Conn, result: str) -> None:
        now = perf_counter_ns()
        self.record.starts.append(conn.counted_from)
        self.record.latencies.append(now - conn.counted_from)
        self.record.outcomes[result] += 1
        conn.answers += 1
        if conn.answers == 1:  # the server had to accept the connection first
            self.record.firsts.append(now - conn.counted_from)
        if conn.alive:
            self.after(conn, now)
        else:  # the server closed it after this answer
            self.conns.discard(conn)
            self.gone(conn)

    def lost(self, conn: _Conn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        if conn.busy:
            conn.busy = False
            self.record.starts.append(conn.counted_from)
            self.record.latencies.append(perf_counter_ns() - conn.counted_from)
            self.record.outcomes[f"error {type(exc).__name__ if exc else 'closed'}"] += 1
            self.replace()

    def after(self, conn: _Conn, now: int) -> None:
        """`conn` answered and is free: give it the next request, or let it rest."""
        raise NotImplementedError

    def gone(self, conn: _Conn) -> None:
        """`conn` answered but cannot be used again."""
        raise NotImplementedError

    def replace(self) -> None:
        """A connection broke mid-request: open another if there is work for it."""
        raise NotImplementedError

    def finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    async def wait_until(self, moment_ns: int) -> None:
        delay = moment_ns - perf_counter_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)

    def close(self) -> Recorded:
        for conn in list(self.conns):
            conn.close()
        self.record.ended_ns = self.record.ended_ns or perf_counter_ns()
        return self.record


class _ClosedLoop(_Run):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.next_index = plan.part
        self.limit = plan.count if plan.count is not None else sys.maxsize
        self.deadline = sys.maxsize
        self.active = 0

    def take(self, now: int) -> int | None:
        index = self.next_index
        if index >= self.limit or now >= self.deadline:
            return None
        self.next_index += self.plan.parts
        return index

    def after(self, conn: _Conn, now: int) -> None:
        index = self.take(now)
        if index is None:
            self.active -= 1
            if self.active == 0:
                self.finish()
            return
        conn.send(index, perf_counter_ns())

    def gone(self, conn: _Conn) -> None:
        if self.next_index < self.limit and perf_counter_ns() < self.deadline:
            self.replace()
            return
        self.active -= 1  # no work left for a new connection
        if self.active == 0:
            self.finish()

    def replace(self) -> None:
        task = self.loop.create_task(self.reconnect())
        task.add_done_callback(lambda _: None)

    async def reconnect(self) -> None:
        try:
            conn = await self.connect()
        except OSError:
            self.active -= 1
            if self.active == 0:
                self.finish()
            return
        self.after(conn, perf_counter_ns())

    async def run(self) -> Recorded:
        conns = [await self.connect() for _ in range(self.plan.connections)]
        await self.wait_until(self.plan.start_ns)
        self.record.began_ns = now = perf_counter_ns()
        if self.plan.duration is not None:
            self.deadline = now + int(self.plan.duration * 1e9)
        self.active = len(conns)
        for conn in conns:
            self.after(conn, now)
        if self.active == 0:
            self.finish()
        await self.finished
        return self.close()


class _OpenLoop(_Run):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        if plan.rate is None or plan.rate <= 0:
            raise ValueError("an open loop needs a positive rate")
        total = plan.count if plan.count is not None else sys.maxsize
        if plan.duration is not None:
            total = min(total, round(plan.rate * plan.duration))
        if total == sys.maxsize:
            raise ValueError("an open loop needs a count or a duration")
        self.total = total
        self.idle: deque[_Conn] = deque()
        self.take_idle = self.idle.pop if plan.reuse == "lifo" else self.idle.popleft
        self.queue: deque[tuple[int, int]] = deque()
        self.opening = 0
        self.busy = 0
        self.scheduled_all = False

    def dispatch(self, index: int, due: int) -> None:
        now = perf_counter_ns()
        self.record.lags.append(max(now - due, 0))  # the generator's own lateness
        while self.idle:
            conn = self.take_idle()
            if conn.alive and now - conn.idle_since < IDLE_REUSE_NS:
                self.send(conn, index, due, now)
                return
            conn.close()
        self.queue.append((index, due))  # every connection is busy: wait for one
        self.replace()

    def send(self, conn: _Conn, index: int, due: int, now: int) -> None:
        # Late (the generator was, or no connection was free): count from the due time.
        # Early (within LOOKAHEAD_NS): count from the send.
        self.busy += 1
        conn.send(index, min(due, now))

    def after(self, conn: _Conn, now: int) -> None:
        self.busy -= 1
        self.put_to_work(conn, now)

    def gone(self, conn: _Conn) -> None:
        self.busy -= 1
        self.replace()
        self.check_done()

    def put_to_work(self, conn: _Conn, now: int) -> None:
        if self.queue:
            index, due = self.queue.popleft()
            self.send(conn, index, due, perf_counter_ns())
            return
        conn.idle_since = now
        self.idle.append(conn)
        self.check_done()

    def lost(self, conn: _Conn, exc: Exception | None) -> None:
        if conn.busy:
            self.busy -= 1
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        super().lost(conn, exc)
        self.check_done()

    def replace(self) -> None:
        if self.queue and len(self.conns) + self.opening < self.plan.connections:
            self.opening += 1
            task = self.loop.create_task(self.open_one())
            task.add_done_callback(lambda _: None)

    async def open_one(self) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            self.opening -= 1
            if self.queue:  # the request that asked for it fails
                _, due = self.queue.popleft()
                self.record.starts.append(due)
                self.record.latencies.append(perf_counter_ns() - due)
                self.record.outcomes[f"error {type(exc).__name__}"] += 1
            self.check_done()
            return
        self.opening -= 1
        self.put_to_work(conn, perf_counter_ns())

    def check_done(self) -> None:
        if self.scheduled_all and not self.queue and self.busy == 0 and self.opening == 0:
            self.finish()

    async def run(self) -> Recorded:
        for _ in range(min(WARM_CONNECTIONS, self.plan.connections)):
            self.idle.append(await self.connect())
        await self.wait_until(self.plan.start_ns)
        assert self.plan.rate is not None
        interval = 1e9 / self.plan.rate
        self.record.began_ns = start = perf_counter_ns()
        for conn in self.idle:
            conn.idle_since = start
        index = self.plan.part
        while index < self.total:
            horizon = perf_counter_ns() + LOOKAHEAD_NS
            due = start + int(index * interval)
            while due <= horizon:
                self.dispatch(index, due)
                index += self.plan.parts
                if index >= self.total:
                    break
                due = start + int(index * interval)
            else:
                # At least one tick: shorter sleeps round down to none, and the loop
                # would spin, taking a core from the server it measures.
                await asyncio.sleep(max(due - horizon, TICK_NS) / 1e9)
        self.scheduled_all = True
        self.check_done()
        await self.finished
        return self.close()


async def drive(plan: Plan) -> Recorded:
    """Run one plan (or one process's part of it) in the running event loop."""
    run = _ClosedLoop(plan) if plan.rate is None else _OpenLoop(plan)
    try:
        return await run.run()
    finally:
        run.close()


def run_plan(plan: Plan) -> Recorded:
    """`drive` in a fresh uvloop: the entry point of a generator process."""
    import uvloop

    return uvloop.run(drive(plan))


def warm() -> int:
    """A no-op that makes a worker process import this module before the first phase."""
    return 0


def shares(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal counts (the first ones one larger)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Generators:
    """Runs plans in this process (`processes` 0) or split over worker processes.

    The workers are spawned (no inherited event loop or sockets) and warmed up before
    the first phase; every part of a plan starts at the same `start_ns`.
    """

    START_MARGIN_NS = 500_000_000  # time for every worker to open its connections

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.pool: ProcessPoolExecutor | None = None
        if processes:
            self.pool = ProcessPoolExecutor(processes, mp_context=get_context("spawn"))

    async def start(self) -> None:
        if self.pool is not None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(loop.run_in_executor(self.pool, warm) for _ in range(self.processes))
            )

    async def run(self, plan: Plan) -> list[Recorded]:
        if self.pool is None:
            return [await drive(plan)]
        parts = max(1, min(self.processes, plan.connections))
        start_ns = perf_counter_ns() + self.START_MARGIN_NS
        loop = asyncio.get_running_loop()
        plans = [
            replace(plan, connections=connections, part=part, parts=parts, start_ns=start_ns)
            for part, connections in enumerate(shares(plan.connections, parts))
        ]
        return list(
            await asyncio.gather(*(loop.run_in_executor(self.pool, run_plan, p) for p in plans))
        )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
