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
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from app.embedded.common import free_port
from loadtests.cpu import CpuMeter, machine, wait_quiet
from loadtests.fixtures import api, auth
from loadtests.fixtures import create_drop as create_drop_via_api
from loadtests.pacing import open_loop
from loadtests.realtime_clients import Group, PushRecorder, start_groups, worker_main
from loadtests.realtime_figures import (
    PhaseFigures,
    group_figures,
    parse_rates,
    parse_timestamp,
    phase_report,
    phase_size,
    verdict,
)
from loadtests.servers import (
    ServerProcess,
    embedded_store_urls,
    metrics_text,
    serve_argv,
    serve_env,
)
from loadtests.stats import Summary, max_in_window, min_gap

ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
USER_PASSWORD = "bench-user-password"
PER_USER_LIMIT = 1000  # the API's maximum perUserLimit


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
        overrides = {
            "BCRYPT_ROUNDS": "4",
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "RESERVATION_TTL_SECONDS": "86400",  # no hold expires (and moves stock) mid-run
            "ACCESS_TOKEN_TTL_SECONDS": "86400",
        }
        if interval_ms is not None:
            overrides["STOCK_BROADCAST_INTERVAL_MS"] = str(interval_ms)
        if gc_folder is not None:
            gc_folder.mkdir()
            (gc_folder / "sitecustomize.py").write_text(GC_HOOK)
            overrides["REALTIME_BENCH_GC_LOG"] = str(gc_folder)
        env = serve_env(data_dir, overrides)
        if gc_folder is not None:
            env["PYTHONPATH"] = f"{gc_folder}{os.pathsep}{env['PYTHONPATH']}"
        server = await cls.start("serve", serve_argv(port, workers), env, port, workdir)
        server.data_dir, server.gc_log = data_dir, gc_folder
        return server


async def pushes_so_far(http: aiohttp.ClientSession, url: str) -> float | None:
    """`sneakerdrop_stock_updates_total` from /metrics (all workers)."""
    for line in (await metrics_text(http, url) or "").splitlines():
        if line.startswith("sneakerdrop_stock_updates_total "):
            return float(line.split()[1])
    return None


# --- the reserve driver --------------------------------------------------------------


@dataclass(frozen=True)
class Reserve:
    sent: float
    done: float
    status: int
    created: float | None  # the server's createdAt (Redis TIME), for a 201


async def reserve_once(http: aiohttp.ClientSession, url: str, drop_id: str, token: str) -> Reserve:
    sent = time.time()
    try:
        async with http.post(f"{url}/api/drops/{drop_id}/reserve", headers=auth(token)) as response:
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

    if rate is not None:
        await open_loop(one, rate, count=count, concurrency=concurrency)
        return results
    numbers = iter(range(count))

    async def loop() -> None:
        for i in numbers:  # shared: each number is taken once
            await one(i)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return results


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


async def prepare(
    http: aiohttp.ClientSession, url: str, args: argparse.Namespace
) -> tuple[list[str], list[str], list[int]]:
    """One drop per phase and enough users for the largest: (drop ids, tokens, phase sizes)."""
    login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    admin = (await api(http, "POST", f"{url}/api/auth/login", None, login))["accessToken"]
    sizes = [phase_size(args.reserves, rate, args.max_phase_seconds) for rate in args.rates]
    drop_ids: list[str] = []
    for i, (rate, size) in enumerate(zip(args.rates, sizes, strict=True)):
        name = f"bench phase {i} ({'max' if rate is None else f'{rate:g}/s'})"
        drop = await create_drop_via_api(http, url, admin, name, size, PER_USER_LIMIT)
        drop_ids.append(drop["id"])
    stamp = time.time_ns()
    tokens: list[str] = []
    for i in range(math.ceil(max(sizes) / PER_USER_LIMIT)):
        body = {"email": f"bench{stamp}-{i}@example.com", "password": USER_PASSWORD}
        tokens.append(
            (await api(http, "POST", f"{url}/api/auth/signup", None, body))["accessToken"]
        )
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
            database_url, redis_url = embedded_store_urls(server.data_dir)
            recorder = PushRecorder(redis_url)
            await recorder.start()
            drop_ids, tokens, sizes = await prepare(http, url, args)
            groups = await start_groups(args, url, drop_ids)
            every = [g for members in groups.values() for g in members]
            for group, info in zip(
                every, await asyncio.gather(*(g.connect() for g in every)), strict=True
            ):
                connect[group.name] = info
                print(f"{group.name}: {json.dumps(info)}", flush=True)
            meter = CpuMeter(
                {"api": server.process.pid},
                [database_url, redis_url],
                {g.name: g.pids for g in every if g.pids != [os.getpid()]},
                generator="driver",
            )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        uvloop.run(worker_main(args.url, args.clients, args.connect_batch, args.drops.split(",")))
        return 0
    result: int = uvloop.run(asyncio.wait_for(bench(args), args.max_seconds))
    return result


if __name__ == "__main__":
    sys.exit(main())
