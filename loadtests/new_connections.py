"""A crowd of new connections under load: how long its clients wait to be accepted.

    python -m loadtests.new_connections --rate 6700 --rounds 6

Starts two products side by side (one worker each) against DATABASE_URL / REDIS_URL (a
scratch database is made and dropped; the Redis database must be empty, it is
flushed at the end): one with `ACCEPT_BATCH=1`, which accepts one connection per turn
of the event loop as libuv does on its own, and one with the default batch. Each
round, after `--gap` s of idle, drives each of them in turn (the order flipped every
round) with the storm's open loop at `--rate` sold-out reserves a second for
`--seconds` s. The load generator starts with 16 open connections and opens more, up
to `--connections`, whenever every one is busy: what a crowd of new clients does to
a server that slows down.

Prints, per round and server: the connections opened, the most that waited in the
kernel's accept queue at once (sampled every 5 ms from /proc/net/tcp), the p99 of
every answer and of the first second's, and each connection's first answer (p50 and
max), which could only come after the server accepted that connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import aiohttp

from app.embedded.common import free_port
from loadtests.loadgen import Generators, Plan
from loadtests.profile_hot_paths import prepare
from loadtests.servers import HOST, ServerProcess, Stores, scratch_stores, start_product
from loadtests.stats import Latency, Merged, buckets

BATCHES = {"one-per-turn": "1", "batched": ""}  # server name -> ACCEPT_BATCH ("" default)


LISTEN = "0A"  # the socket state in /proc/net/tcp
SAMPLE_S = 0.005


def accept_queue(port: int) -> int:
    """Connections waiting in the kernel to be accepted by the server listening on `port`.

    For a listening socket, /proc/net/tcp's rx_queue is the length of its accept queue.
    """
    suffix = f":{port:04X}"
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            if fields[1].endswith(suffix) and fields[3] == LISTEN:
                return int(fields[4].split(":")[1], 16)
    return 0


async def longest_accept_queue(port: int, stop: asyncio.Event) -> int:
    longest = 0
    while not stop.is_set():
        longest = max(longest, accept_queue(port))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
    return longest


def line(name: str, merged: Merged, queued: int) -> str:
    every = Latency.of(merged.latencies)
    first = Latency.of(merged.firsts)
    assert every is not None
    assert first is not None
    per_second = buckets(merged.starts, merged.latencies, merged.began_ns)
    first_second = next((b.p99 for b in per_second if b.second == 0), 0.0)
    return (
        f"  {name:>12}: {merged.connections:3d} connections, at most {queued:3d} waiting "
        f"to be accepted; p99 {every.p99:7.1f} ms, "
        f"first second {first_second:7.1f} ms; each connection's first "
        f"answer p50 {first.p50:6.1f}, max {first.max:7.1f} ms"
    )


async def measure(args: argparse.Namespace) -> int:
    async with scratch_stores("new-connections-") as (stores, workdir):
        return await measure_in(args, stores, workdir)


async def measure_in(args: argparse.Namespace, stores: Stores, workdir: Path) -> int:
    generators = Generators(1)
    servers: list[ServerProcess] = []
    try:
        ports: dict[str, int] = {}
        for name, batch in BATCHES.items():
            ports[name] = free_port()
            overrides = {"ACCEPT_BATCH": batch} if batch else {}
            servers.append(await start_product(stores, ports[name], 1, workdir, overrides, name))
        async with aiohttp.ClientSession() as http:
            for server in servers:
                await server.wait_ready(http)
        await generators.start()
        requests = await prepare("sold-out", servers[0].url, stores)
        first_host = f"{HOST}:{ports[servers[0].name]}".encode()
        per_server = {
            name: [r.replace(first_host, f"{HOST}:{port}".encode()) for r in requests]
            for name, port in ports.items()
        }
        for name, port in ports.items():  # warm: a max-rate second on each
            await generators.run(Plan(HOST, port, per_server[name], 64, duration=1))
        print(f"open loop at {args.rate:,.0f}/s for {args.seconds} s after {args.gap} s idle")
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}")
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                await asyncio.sleep(args.gap)
                port = ports[server.name]
                plan = Plan(
                    HOST,
                    port,
                    per_server[server.name],
                    args.connections,
                    rate=args.rate,
                    duration=args.seconds,
                )
                stop = asyncio.Event()
                sampler = asyncio.create_task(longest_accept_queue(port, stop))
                merged = Merged.of(await generators.run(plan))
                stop.set()
                print(line(server.name, merged, await sampler), flush=True)
    finally:
        generators.close()
        for server in servers:
            await server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=6000.0, help="reserves/s, open loop")
    parser.add_argument("--seconds", type=float, default=4.0, help="per server and round")
    parser.add_argument("--gap", type=float, default=5.0, help="s of idle before each")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=256, help="at most, per phase")
    args = parser.parse_args()
    import uvloop

    return uvloop.run(measure(args))


if __name__ == "__main__":
    sys.exit(main())
