"""Bounded request heads against a real `sneakerdrop serve` with its default workers.

A head (request line + headers) over 16 KiB is answered 431 problem+json and closed;
a head not complete within 10 s closes the connection; huge-header and slow clients
leave every worker's memory flat and /healthz fast; no response says `server`.
Keep-alive and pipelining still work (app/runtime/http_limits.py counts heads itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson
import psutil
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.cli import DEFAULT_WORKERS
from app.embedded.common import free_port
from app.runtime.http_limits import BoundedHttpToolsProtocol, serve_protocol
from tests.conftest import make_settings
from tests.support.realtime_server import (
    log_text,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
    wait_until,
)
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

KIB, MIB = 1024, 1024 * 1024
HEAD_TIMEOUT = 10.0
CLOSE_ALLOWANCE = 2.5  # a busy 2-core machine: timers fire late, never early
SLOW_CLIENTS = 2_000
STREAMERS = 8
STREAM_BYTES = 128 * MIB
RSS_BOUND = 50 * MIB
HEALTHZ_BOUND = 0.050


@dataclass
class Serve:
    port: int
    workers: list[psutil.Process]


def _raise_fd_limit(need: int) -> None:
    """Room for SLOW_CLIENTS sockets here and in the workers (which inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _workers(serve_pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(serve_pid).children():
        command = " ".join(child.cmdline())
        if "spawn_main" in command and "resource_tracker" not in command:
            found.append(child)
    return found


@pytest.fixture(scope="module")
async def serve(
    stores: StoreUrls, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Serve]:
    _raise_fd_limit(SLOW_CLIENTS + 1_024)
    tmp = tmp_path_factory.mktemp("limits")
    settings = make_settings(stores)
    env = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "JWT_ACCESS_SECRET": settings.jwt_access_secret or "",
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret or "",
        "RATE_LIMITS": "off",
        "DATA_DIR": str(tmp / "data"),
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
        "ENV": "test",
    }
    port, log = free_port(), tmp / "serve.log"
    process = await start_serve_process(port, env, log)
    try:
        await wait_ready(process, f"http://127.0.0.1:{port}", log)

        async def all_workers() -> bool:
            return len(_workers(process.pid)) == DEFAULT_WORKERS

        await wait_until(all_workers, 10, f"{DEFAULT_WORKERS} workers")
        yield Serve(port, _workers(process.pid))
    finally:
        codes = await stop_serve_processes([process])
    assert codes == [0], log_text(log)[-3000:]


# --- raw HTTP/1.1 -----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _head(path: str, pad: int = 0, *, close: bool = True, total: int | None = None) -> bytes:
    """A GET head; with `total`, padded with an X-Pad header to exactly `total` bytes."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if close:
        lines.append("Connection: close")
    start = "\r\n".join(lines).encode() + b"\r\n"
    if total is not None:
        pad = total - len(start) - len(b"X-Pad: \r\n\r\n")
    return start + (b"X-Pad: " + b"a" * pad + b"\r\n" if pad else b"") + b"\r\n"


def _answers(raw: bytes) -> list[Answer]:
    """Parse back-to-back responses that carry a content-length (all of ours do)."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        answers.append(Answer(int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return answers


async def _exchange(port: int, *writes: bytes) -> list[Answer]:
    """Send `writes` (each its own write), read until the server closes, parse the answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return _answers(raw)


async def _closed_after(reader: asyncio.StreamReader, started: float, within: float) -> float:
    """Seconds from `started` until the server closes the connection (it sends nothing)."""
    data = await asyncio.wait_for(reader.read(), within)
    assert data == b"", data[:200]
    return time.monotonic() - started


# --- (a) 431 past 16 KiB, (d) no server header, keep-alive and pipelining -----------


async def test_a_head_over_16_kib_gets_431_problem_and_is_closed(serve: Serve) -> None:
    [big] = await _exchange(serve.port, _head("/healthz", total=17 * KIB))
    assert big.status == 431
    assert big.headers["content-type"] == "application/problem+json"
    assert big.headers["connection"] == "close"
    assert "x-request-id" in big.headers
    problem = orjson.loads(big.body)
    assert problem["code"] == "HEADERS_TOO_LARGE"
    assert problem["status"] == 431
    assert set(problem) >= {"type", "title", "detail"}

    [fine] = await _exchange(serve.port, _head("/healthz", total=15 * KIB))
    assert fine.status == 200, fine.body
    [edge] = await _exchange(serve.port, _head("/healthz", total=16 * KIB))
    assert edge.status == 200, edge.body  # "over 16 KiB": exactly 16 KiB passes
    [over] = await _exchange(serve.port, _head("/healthz", total=16 * KIB + 1))
    assert over.status == 431


async def test_a_head_split_over_reads_and_a_body_after_it_are_counted_right(serve: Serve) -> None:
    head = _head("/healthz", total=16 * KIB)
    [split] = await _exchange(serve.port, head[:5_000], head[5_000:10_000], head[10_000:])
    assert split.status == 200
    # 15 KiB of head and 4 KiB of body in one write: only the head counts.
    body = orjson.dumps({"email": "x@example.com", "password": "p" * (4 * KIB)})
    start = (
        b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    )
    pad = b"X-Pad: " + b"a" * (15 * KIB - len(start) - 11) + b"\r\n\r\n"
    [login] = await _exchange(serve.port, start + pad + body)
    assert login.status in (401, 422), login.body  # parsed and answered by the app


async def test_keep_alive_and_pipelining_still_work(serve: Serve) -> None:
    # Three pipelined requests of 10 KiB heads in one write (30 KiB): each head counts alone.
    pipelined = _head("/healthz", close=False, total=10 * KIB) * 2 + _head("/healthz", 10 * KIB)
    answers = await _exchange(serve.port, pipelined)
    assert [a.status for a in answers] == [200, 200, 200]
    # Keep-alive: a request, its answer, then another on the same connection.
    reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
    try:
        for _ in range(3):
            writer.write(_head("/healthz", close=False))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
    finally:
        writer.close()


async def test_no_response_says_server(serve: Serve) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serve.port}", timeout=5) as http:
        for path in ("/healthz", "/readyz", "/api/drops", "/no-such-route", "/"):
            response = await http.get(path)
            assert "server" not in response.headers, (path, response.headers)
            assert "date" in response.headers
    [big] = await _exchange(serve.port, _head("/healthz", total=17 * KIB))
    assert "server" not in big.headers
    assert "date" in big.headers


# --- (c) a head not complete within 10 s closes the connection ----------------------


async def test_an_unfinished_head_is_closed_within_10_s(serve: Serve) -> None:
    async def silent() -> float:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        try:
            return await _closed_after(reader, started, HEAD_TIMEOUT + 10)
        finally:
            writer.close()

    async def partial() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            await writer.drain()
            return await _closed_after(reader, time.monotonic(), HEAD_TIMEOUT + 10)
        finally:
            writer.close()

    async def second_request_partial() -> float:
        """On a kept-alive connection the 10 s run from the first byte of the next request."""
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        try:
            writer.write(_head("/healthz", close=False))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"GET /healthz HTTP/1.1\r\nHo")
            await writer.drain()
            return await _closed_after(reader, time.monotonic(), HEAD_TIMEOUT + 10)
        finally:
            writer.close()

    times = await asyncio.gather(silent(), partial(), second_request_partial())
    print(f"\nunfinished heads closed after {', '.join(f'{t:.2f}' for t in times)} s")
    for seconds in times:
        assert HEAD_TIMEOUT - 0.5 <= seconds <= HEAD_TIMEOUT + CLOSE_ALLOWANCE, times


# --- (b) huge and slow heads leave memory flat and /healthz fast -------------------


async def _stream_unfinished_header(port: int, deadline: float) -> tuple[int, bool]:
    """Send an endless header as fast as the server reads, until it closes the connection.

    Bytes sent, and whether the server closed it (rather than 128 MiB or the deadline
    ending the stream)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    chunk, sent = b"a" * (256 * KIB), 0
    try:
        while sent < STREAM_BYTES and not reader.at_eof():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), max(deadline - time.monotonic(), 0.001))
            sent += len(chunk)
    except (ConnectionError, OSError):
        return sent, True
    except TimeoutError:
        return sent, False
    finally:
        writer.close()
    return sent, reader.at_eof()


async def _slow_clients(port: int, count: int, deadline: float) -> list[float]:
    """`count` clients that send a head a byte a second; the seconds until each is closed."""
    payload = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 64
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    for first in range(0, count, 200):  # in batches: a burst of SYNs could overflow the backlog
        batch = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(first, first + 200))
        )
        connections += [(reader, writer, time.monotonic()) for reader, writer in batch]

    async def trickle() -> None:
        for index in range(len(payload)):
            for reader, writer, _ in connections:
                if not writer.is_closing() and not reader.at_eof():
                    with contextlib.suppress(ConnectionError, OSError):
                        writer.write(payload[index : index + 1])
            await asyncio.sleep(1)

    async def closed(reader: asyncio.StreamReader, started: float) -> float:
        with contextlib.suppress(ConnectionError, TimeoutError):  # a timeout fails below
            await asyncio.wait_for(reader.read(), deadline - time.monotonic())
        return time.monotonic() - started

    sender = asyncio.create_task(trickle())
    try:
        return list(await asyncio.gather(*(closed(r, started) for r, _, started in connections)))
    finally:
        sender.cancel()
        for _, writer, _ in connections:
            writer.close()


async def _healthz_seconds(port: int) -> float:
    """One GET /healthz on a fresh connection: connect, ask, read the whole answer.

    No answer within 5 s counts as infinitely slow (the assertions print them all)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(_head("/healthz"))
                raw = await reader.read()
            finally:
                writer.close()
    except TimeoutError:
        return math.inf
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    return time.monotonic() - started


async def test_huge_and_slow_heads_leave_workers_flat_and_healthz_fast(serve: Serve) -> None:
    for _ in range(40):  # warm every worker up before the baseline
        await _healthz_seconds(serve.port)
    start_rss = {w.pid: w.memory_info().rss for w in serve.workers}
    peak_rss = dict(start_rss)
    latencies: list[float] = []
    attack_over = asyncio.Event()

    async def sample_rss() -> None:
        while not attack_over.is_set():
            for worker in serve.workers:
                peak_rss[worker.pid] = max(peak_rss[worker.pid], worker.memory_info().rss)
            await asyncio.sleep(0.05)

    async def probe_healthz() -> None:
        await asyncio.sleep(1.0)  # once the slow clients are connecting
        while not attack_over.is_set():
            latencies.append(await _healthz_seconds(serve.port))
            await asyncio.sleep(0.2)

    deadline = time.monotonic() + HEAD_TIMEOUT + 15
    watchers = [asyncio.create_task(sample_rss()), asyncio.create_task(probe_healthz())]
    try:
        sent, slow = await asyncio.gather(
            asyncio.gather(
                *(_stream_unfinished_header(serve.port, deadline) for _ in range(STREAMERS))
            ),
            _slow_clients(serve.port, SLOW_CLIENTS, deadline),
        )
    finally:
        attack_over.set()
        await asyncio.gather(*watchers)

    growth = {pid: (peak_rss[pid] - start_rss[pid]) / MIB for pid in start_rss}
    ordered = sorted(latencies)
    print(
        f"\nworker RSS growth (MiB): {', '.join(f'{g:.1f}' for g in growth.values())}"
        f"; streamers sent (KiB): {[s // KIB for s, _ in sent]}"
        f"; slow clients closed after {min(slow):.2f}..{max(slow):.2f} s"
        f"; /healthz x{len(ordered)}: median {statistics.median(ordered) * 1000:.1f} ms,"
        f" p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )
    assert all(g * MIB <= RSS_BOUND for g in growth.values()), growth
    assert all(closed for _, closed in sent), sent  # the server closed every one, early
    assert max(slow) <= HEAD_TIMEOUT + CLOSE_ALLOWANCE + 2, max(slow)  # + the trickle's own lag
    assert len(ordered) >= 20, ordered
    # Most answers within 50 ms: the median, and 80 % of them (a shared 2-core machine can
    # stall any one probe; the max is printed above, not asserted).
    assert statistics.median(ordered) <= HEALTHZ_BOUND, ordered
    assert ordered[int(len(ordered) * 0.8)] <= HEALTHZ_BOUND, ordered


# --- the start-up check -------------------------------------------------------------


def test_serve_fails_at_start_up_naming_uvicorn_when_an_internal_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert serve_protocol(enabled=True) is BoundedHttpToolsProtocol
    assert serve_protocol(enabled=False) == "httptools"  # HTTP_LIMITS=off
    monkeypatch.delattr(HttpToolsProtocol, "on_header")
    with pytest.raises(RuntimeError, match=rf"uvicorn {uvicorn.__version__} lacks .*on_header"):
        serve_protocol(enabled=True)
