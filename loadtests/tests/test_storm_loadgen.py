"""loadtests/loadgen.py against a tiny HTTP/1.1 server in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loadtests.loadgen import LOOKAHEAD_NS, Plan, Reuse, build_request, drive

PROBLEM = b'{"status":409,"code":"SOLD_OUT","x":1}'
ANSWERS = {
    b"/ok": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    b"/no": b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s" % (len(PROBLEM), PROBLEM),
    b"/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"/slow": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
}
SLOW_SECONDS = 0.05


async def handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    served: list[int] | None = None,
) -> None:
    """Answers by path; `served`, if given, counts each connection's requests as they come."""
    slot = 0
    if served is not None:
        slot = len(served)
        served.append(0)
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            path = head.split(b" ", 2)[1]
            if served is not None:
                served[slot] += 1
            if path == b"/slow":
                await asyncio.sleep(SLOW_SECONDS)
            writer.write(ANSWERS[path])
            await writer.drain()
            if path == b"/close":
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        server.close()


def plan(port: int, paths: list[str], **options: object) -> Plan:
    requests = [build_request("POST", path, f"127.0.0.1:{port}", token="t") for path in paths]
    return Plan("127.0.0.1", port, requests, **options)  # type: ignore[arg-type]


async def test_closed_loop_sends_exactly_count_and_reads_problem_codes(port: int) -> None:
    record = await drive(plan(port, ["/ok", "/no"], connections=3, count=30))
    assert record.outcomes == {"201": 15, "409 SOLD_OUT": 15}
    assert record.connections == 3
    assert len(record.latencies) == 30
    assert all(latency > 0 for latency in record.latencies)


async def test_closed_loop_reconnects_when_the_server_closes(port: int) -> None:
    record = await drive(plan(port, ["/close"], connections=1, count=5))
    assert record.outcomes == {"200": 5}
    assert record.connections == 5
    assert len(record.firsts) == 5  # every answer was the first on its connection


async def test_each_connections_first_answer_is_recorded_once(port: int) -> None:
    record = await drive(plan(port, ["/ok"], connections=3, count=30))
    assert len(record.firsts) == 3
    assert all(first in record.latencies for first in record.firsts)


async def test_closed_loop_stops_at_its_duration(port: int) -> None:
    record = await drive(plan(port, ["/ok"], connections=2, duration=0.2))
    assert 0.2e9 <= record.ended_ns - record.began_ns < 1e9
    assert record.outcomes["201"] == len(record.latencies) > 10


async def test_open_loop_sends_on_schedule(port: int) -> None:
    record = await drive(plan(port, ["/ok"], connections=4, rate=200.0, count=10))
    assert record.outcomes == {"201": 10}
    dues = [record.began_ns + i * 5_000_000 for i in range(10)]  # every 5 ms
    for start, due in zip(sorted(record.starts), dues, strict=True):
        assert due - LOOKAHEAD_NS <= start <= due  # early by the lookahead at most, else due
    assert len(record.lags) == 10


async def test_parts_of_a_plan_share_its_requests(port: int) -> None:
    parts = [
        await drive(plan(port, ["/ok", "/no"], connections=2, count=11, part=k, parts=2))
        for k in range(2)
    ]
    assert parts[0].outcomes == {"201": 6}  # requests 0, 2, ..., 10
    assert parts[1].outcomes == {"409 SOLD_OUT": 5}  # requests 1, 3, ..., 9


@pytest.mark.parametrize(("reuse", "busiest_share"), [("lifo", (0.7, 1.0)), ("fifo", (0.0, 0.45))])
async def test_open_loop_reuse_decides_how_requests_spread_over_connections(
    reuse: Reuse, busiest_share: tuple[float, float]
) -> None:
    """Eight slow answers first open eight connections; then "lifo" keeps reusing the
    connections freed last, while "fifo" takes turns over all eight. Measured: the
    share of the requests the two busiest connections carried (a fair share is 25 %).
    A request is due every 4 ms, well over the answer time of the in-process server,
    so a "lifo" connection is free again before the next one is due even on a busy
    machine (at 1 ms it sometimes was not, and a third connection took a share)."""
    served: list[int] = []  # requests per connection, counted before each answer
    server = await asyncio.start_server(lambda r, w: handle(r, w, served), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        paths = ["/slow"] * 8 + ["/ok"] * 292
        record = await drive(plan(port, paths, connections=8, rate=250.0, count=300, reuse=reuse))
    assert record.outcomes == {"201": 300}
    assert record.connections == len(served) == 8
    assert sum(served) == 300
    low, high = busiest_share
    assert low <= sum(sorted(served)[-2:]) / 300 <= high, served
