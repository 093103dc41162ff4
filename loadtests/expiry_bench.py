"""Expiry benchmark: N live holds expiring over a spread, and how soon each unit is back.

    python -m loadtests.expiry_bench --holds 100000 --spread-seconds 60
    python -m loadtests.expiry_bench --holds 2000 --spread-seconds 10      # a quick run

The issue's target: 100,000 live holds expiring over a minute, each unit back in
stock at most 1 s after its hold's ``expiresAt`` (p99).

Method
------
1. Starts ``sneakerdrop serve`` as a subprocess on 127.0.0.1 (``RATE_LIMITS=off``,
   ``LOG_LEVEL=WARNING``, fresh JWT secrets, ``RESERVATION_TTL_SECONDS`` = the spread
   plus ``--gap-seconds``), on the stores of ``--database-url`` / ``--redis-url``
   (default: ``DATABASE_URL`` / ``REDIS_URL``; unset: embedded ones in a temporary
   ``DATA_DIR``, removed afterwards). ``--target URL`` attaches to a running server
   instead; then ``--redis-url``, ``--database-url`` and (for ``--via http``) the
   server's ``JWT_ACCESS_SECRET`` in the environment are needed.
2. Creates the users straight in PostgreSQL (one ``COPY``) and mints their access
   tokens with the app's ``TokenService``: the per-user limit needs one user per hold,
   and signing up 100,000 users over HTTP would measure bcrypt. Creates one drop of
   ``--holds`` units (``perUserLimit`` 1) through the admin API.
3. Takes the holds at a steady rate over ``--spread-seconds`` (open loop, at most
   ``--concurrency`` in flight), so their ``expiresAt`` spread evenly over the same
   span one TTL later. ``--via http``: ``POST /api/drops/{id}/reserve``, the product
   path. ``--via store`` (the default): the app's ``HoldStore.reserve`` (the same
   ``reserve.lua``) from this process, because HTTP with the load generator on the same
   two cores falls short of 1,700 reserves/s; the report says which was used.
   Reserving stops ``--margin-seconds`` before the first hold expires, so nothing but
   expiry moves the stock afterwards.
4. Snapshot, in one ``MULTI``: the drop's ``avail`` (the base) and its due set, whose
   scores are every live hold's ``expiresAt`` as ``reserve.lua`` computed it from
   Redis ``TIME``.
5. Measures without touching the server: every ``--poll-ms`` this process reads
   ``TIME`` and the drop's ``avail`` in one ``MULTI`` on its own Redis connection.
   Nothing else changes the stock now, so the k-th unit back belongs to the k-th
   ``expiresAt`` in sorted order: ``lag_k = (first poll with avail >= base + k) -
   expiresAt_k``, both on the Redis clock. A unit came back between that poll and the
   one before, so the report gives the lag as an upper bound (the headline, judged
   against the target) and a lower bound. Cross-check: ``release.lua`` records each
   ended hold with the Redis time it ran (``{d:ID}:closed``), read after the run: the
   per-hold release lag, exact to the millisecond.
6. Which layer released how many (keyspace listener, sweeper, reconciler): the deltas
   of ``sneakerdrop_holds_expired_total`` on ``/metrics``. This process also listens to
   the drop's timer-key ``expired`` events, as the app's listener does: Redis sends one
   when it expires a key itself and one when ``release.lua``'s ``DEL`` meets a key past
   its TTL, so their count against the keyspace layer's releases shows how much of the
   listener's work is a no-op. CPU seconds of the server's processes (when started
   here) and of Redis (``INFO cpu``) during the expiry phase; with ``--py-spy``, a
   sampling profile of the API process over that phase (collapsed stacks).
7. The invariant at the end, as ``sneakerdrop check`` does it (``Reconciler.check``):
   available + live holds + purchases == total, Redis agreeing with PostgreSQL.
8. Writes ``loadtests/reports/expiry-<UTC time>.json`` and ``.png`` (lag over time,
   and units expired vs units back).

With ``--database-url`` / ``--redis-url`` given, the run leaves its users, drop and
ended-hold records behind: use a database and a Redis db of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from redis.asyncio import Redis

from app.embedded.common import free_port
from loadtests import plots
from loadtests.cpu import cpu_by_name, machine, py_spy, py_spy_record
from loadtests.expiry_holds import (
    HttpReserver,
    ReservePhase,
    Reserver,
    StoreReserver,
    reserve_steadily,
)
from loadtests.expiry_watch import (
    ExpiredEvents,
    Snapshot,
    clock_offset_ms,
    closed_entries,
    event_lags,
    expired_by_layer,
    layer_delta,
    poll_stock,
    release_lags,
    snapshot,
    stock_lags,
    summary,
    worst_per_second,
)
from loadtests.fixtures import User, create_users
from loadtests.fixtures import create_drop as create_drop_via_api
from loadtests.invariant import drop_checks
from loadtests.servers import (
    ServerProcess,
    embedded_store_urls,
    metrics_text,
    serve_argv,
    serve_env,
)

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "loadtests" / "reports"
TARGET_MS = 1000.0


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def server_metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    return expired_by_layer(await metrics_text(http, url) or "")


# --- optional: a py-spy profile of the server during the expiry phase -----------------


def stem(args: argparse.Namespace, run_id: str) -> Path:
    """The report files' path without suffix."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    path: Path = args.out or REPORTS / f"expiry-{run_id}"
    return path


async def start_profile(
    server: ServerProcess, base: Path, seconds: float
) -> tuple[asyncio.subprocess.Process, Path] | None:
    """`py-spy record` of the API process for `seconds` (sampling, non-blocking)."""
    spy = py_spy()
    if spy is None:
        print("warning: no py-spy in the venv (pip install py-spy); no profile", flush=True)
        return None
    output = base.with_suffix(".pyspy.folded")
    process = await py_spy_record(spy, server.process.pid, seconds, output, 200, quiet=True)
    return process, output


async def finish_profile(profiler: tuple[asyncio.subprocess.Process, Path] | None) -> list[str]:
    if profiler is None:
        return []
    process, output = profiler
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
    return [str(output)] if output.exists() else []


# --- the report ----------------------------------------------------------------------


def verdict(lag: dict[str, float] | None, missing: int, invariant_ok: bool) -> list[str]:
    lines = []
    if lag is None:
        return ["no unit came back: nothing to judge"]
    met = lag["p99"] <= TARGET_MS and missing == 0
    lines.append(
        f"stock back p99 <= {TARGET_MS:g} ms after expiresAt: {'met' if met else 'MISSED'} "
        f"(p99 {lag['p99']:.0f} ms, max {lag['max']:.0f} ms, {missing} units never seen back)"
    )
    lines.append(f"invariant after the run: {'ok' if invariant_ok else 'BROKEN'}")
    return lines


# --- the run -------------------------------------------------------------------------


@dataclass
class Stores:
    url: str
    database_url: str
    redis_url: str
    server: ServerProcess | None
    workdir: Path


async def open_stores(
    args: argparse.Namespace, http: aiohttp.ClientSession, secrets_: tuple[str, str]
) -> Stores:
    workdir = Path(tempfile.mkdtemp(prefix="expiry-bench-"))
    if args.target:
        if not (args.database_url and args.redis_url):
            raise SystemExit("--target needs --database-url and --redis-url (or the env vars)")
        return Stores(args.target.rstrip("/"), args.database_url, args.redis_url, None, workdir)
    overrides = {
        "JWT_ACCESS_SECRET": secrets_[0],
        "JWT_REFRESH_SECRET": secrets_[1],
        "RESERVATION_TTL_SECONDS": str(args.ttl_seconds),
    }
    overrides.update(item.partition("=")[::2] for item in args.server_env)
    env = serve_env(workdir / "data", overrides)
    for name, value in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)  # embedded, under DATA_DIR
    port = args.port or free_port()
    server = await ServerProcess.start("serve", serve_argv(port, args.workers), env, port, workdir)
    try:
        await server.wait_ready(http)
    except BaseException:
        await server.stop()
        raise
    database_url, redis_url = args.database_url, args.redis_url
    if not (database_url and redis_url):
        embedded = embedded_store_urls(workdir / "data")
        database_url, redis_url = database_url or embedded[0], redis_url or embedded[1]
    return Stores(server.url, database_url, redis_url, server, workdir)


@dataclass
class Run:
    """What the phases of one run share."""

    args: argparse.Namespace
    run_id: str
    stores: Stores
    http: aiohttp.ClientSession
    container: Any  # app.container.Container, imported late
    access_secret: str  # the server's JWT_ACCESS_SECRET: tokens are minted with it
    poller: Redis  # this process's own connection, for TIME and the stock
    offset_ms: float  # Redis TIME - local time.time()
    rtt_ms: float


async def create_drop(run: Run) -> tuple[str, list[User]]:
    """The drop (through the admin API, with a minted admin token) and one user per hold."""
    args = run.args
    database_url, secret = run.stores.database_url, run.access_secret
    prefix = f"expiry-{run.run_id}"
    (admin,) = await create_users(database_url, secret, 1, prefix=f"{prefix}-admin", role="admin")
    name = f"expiry bench {run.run_id}"
    drop = await create_drop_via_api(
        run.http, run.stores.url, admin.token, name, args.holds, per_user_limit=1
    )
    started = time.monotonic()
    users = await create_users(database_url, secret, args.holds, prefix=prefix)
    print(
        f"drop {drop['id']}: {args.holds} units; {len(users)} users in "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )
    return drop["id"], users


async def take_holds(run: Run, drop_id: str, users: list[User]) -> ReservePhase:
    args = run.args
    phase = ReservePhase(args.via, args.holds)
    reserver: Reserver
    if args.via == "http":
        tokens = [user.token for user in users]
        reserver = HttpReserver(phase, run.http, run.stores.url, drop_id, tokens)
    else:
        ttl_ms = args.ttl_seconds * 1000
        user_ids = [user.id for user in users]
        reserver = StoreReserver(phase, run.container.hold_store, drop_id, user_ids, ttl_ms)
    print(
        f"reserving {args.holds} via {args.via} over {args.spread_seconds:g} s "
        f"({args.holds / args.spread_seconds:.0f}/s)",
        flush=True,
    )
    await reserve_steadily(
        reserver,
        args.holds,
        args.spread_seconds,
        args.concurrency,
        run.offset_ms,
        args.margin_seconds,
    )
    return phase


@dataclass
class Watched:
    snap: Snapshot
    samples: list[tuple[int, int]]
    poll_gaps: list[float]
    layers: dict[str, int]
    cpu: dict[str, Any]
    profile: list[str]
    expired_events: dict[str, float]  # reservation id -> arrival of its timer's `expired`

    @property
    def expiries(self) -> list[int]:
        return [expires for _, expires in self.snap.due]


async def watch_expiry(run: Run, drop_id: str, answered_ok: int) -> Watched:
    """Snapshot the live holds, then poll the stock until every unit is back (or settle ends)."""
    args, server = run.args, run.stores.server
    layers_before = await server_metrics(run.http, run.stores.url)
    cpu_before = cpu_by_name(server.process.pid) if server else {}
    redis_cpu_before = await redis_cpu(run.poller)
    events = ExpiredEvents(run.poller, drop_id)
    await events.start()
    snap = await snapshot(run.poller, drop_id)
    if not snap.due:
        raise RuntimeError("no live holds after the reserve phase")
    first, last = snap.due[0][1], snap.due[-1][1]
    if snap.at_ms >= first:
        raise RuntimeError(
            "the snapshot came after the first expiry: raise --ttl-seconds "
            f"(snapshot {snap.at_ms}, first expiresAt {first})"
        )
    if len(snap.due) != answered_ok or snap.live_holds != answered_ok:
        print(
            f"warning: {len(snap.due)} due entries / {snap.live_holds} live holds "
            f"but {answered_ok} reserves answered OK",
            flush=True,
        )
    print(
        f"{len(snap.due)} holds expire over {(last - first) / 1000:.1f} s, "
        f"the first in {(first - snap.at_ms) / 1000:.1f} s; polling every {args.poll_ms:g} ms",
        flush=True,
    )
    profiler = None
    if args.py_spy and server:
        seconds = (last - snap.at_ms) / 1000 + 2
        profiler = await start_profile(server, stem(args, run.run_id), seconds)
    samples, gaps = await poll_stock(
        run.poller,
        drop_id,
        args.poll_ms / 1000,
        snap.available + len(snap.due),
        last + int(args.settle_seconds * 1000),
    )
    await events.stop()
    profile = await finish_profile(profiler)
    cpu: dict[str, Any] = {
        "server": cpu_delta(cpu_before, cpu_by_name(server.process.pid)) if server else None,
        "redis": round(await redis_cpu(run.poller) - redis_cpu_before, 2),
    }
    layers = layer_delta(layers_before, await server_metrics(run.http, run.stores.url))
    return Watched(snap, samples, gaps, layers, cpu, profile, events.arrivals)


async def invariant(run: Run, drop_id: str) -> dict[str, Any]:
    """available + live holds + purchases == total, as `sneakerdrop check` sees it."""
    checks = await drop_checks(run.stores.database_url, run.stores.redis_url)
    check = next(c for c in checks if c.drop_id == drop_id)
    balanced = check.available + check.live_holds + check.sold_pg == check.total_pg
    return {
        "ok": check.healthy and balanced,
        "total": check.total_pg,
        "available": check.available,
        "live_holds": check.live_holds,
        "sold": check.sold_pg,
        "healthy": check.healthy,
    }


async def measure(run: Run) -> dict[str, Any]:
    """The whole run on open stores: setup, holds, expiry, then the figures and files."""
    args = run.args
    started = machine()
    drop_id, users = await create_drop(run)
    phase = await take_holds(run, drop_id, users)
    reserve_report = phase.report()
    print(f"reserve phase: {json.dumps(reserve_report)}", flush=True)
    watched = await watch_expiry(run, drop_id, phase.ok)

    expiries = watched.expiries
    first, last = expiries[0], expiries[-1]
    units, missing = stock_lags(expiries, watched.samples, watched.snap.available)
    lag = summary(u.lag_ms for u in units)
    entries = await closed_entries(run.poller, drop_id, [rid for rid, _ in watched.snap.due])
    per_hold, states = release_lags(entries)
    released = [
        (expires, int(entry.split("|")[4]) - expires)
        for (_, expires), entry in zip(watched.snap.due, entries, strict=True)
        if entry is not None and entry.startswith("EXPIRED|")
    ]
    checked = await invariant(run, drop_id)
    result: dict[str, Any] = {
        "argv": sys.argv,
        "run_id": run.run_id,
        "machine_at_start": started,
        "machine_at_end": machine(),
        "server": "started here" if run.stores.server else run.stores.url,
        "stores": {
            "database": "given" if args.database_url else "embedded",
            "redis": "given" if args.redis_url else "embedded",
        },
        "clock": {"redis_minus_local_ms": run.offset_ms, "rtt_ms": run.rtt_ms},
        "drop_id": drop_id,
        "reserve_phase": reserve_report,
        "expiry_phase": {
            "holds": len(expiries),
            "per_second": round(len(expiries) / max((last - first) / 1000, 0.001), 1),
            "base_available": watched.snap.available,
            "spread_seconds": round((last - first) / 1000, 2),
            "poll_ms": args.poll_ms,
            "polls": len(watched.samples),
            "poll_gap_ms": summary(g * 1000 for g in watched.poll_gaps),
            "units_back": len(units),
            "units_never_seen_back": missing,
            "seconds_from_first_expiry_to_last_poll": round(
                (watched.samples[-1][0] - first) / 1000, 2
            ),
        },
        "stock_lag_ms": lag,
        "stock_lag_floor_ms": summary(u.lag_floor_ms for u in units),
        "release_lag_ms": summary(per_hold),
        "closed_states": dict(states),
        # Redis emits `expired` when it expires a timer key itself (layer 1's cue) and also
        # when release.lua's DEL meets a timer key already past its TTL (after the release).
        "timer_expired_events_lag_ms": summary(
            event_lags(watched.expired_events, watched.snap.due, run.offset_ms)
        ),
        "released_by_layer": watched.layers,
        "cpu_seconds_during_expiry": watched.cpu,
        "worst_lag_per_second": worst_per_second(units, first),
        "invariant": checked,
        "target_ms": TARGET_MS,
        "verdict": verdict(lag, missing, checked["ok"]),
    }
    base = stem(args, run.run_id)
    json_path, png_path = base.with_suffix(".json"), base.with_suffix(".png")
    result["files"] = [str(json_path), str(png_path), *watched.profile]
    json_path.write_text(json.dumps(result, indent=2))
    title = (
        f"{len(expiries):,} holds over {(last - first) / 1000:.0f} s via {args.via}: "
        f"stock lag p99 {lag['p99'] if lag else float('nan'):.0f} ms"
    )
    plots.expiry(png_path, units, released, title, TARGET_MS)
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from app.config import load_settings
    from app.container import build_container

    access = os.environ.get("JWT_ACCESS_SECRET") if args.target else None
    if args.target and args.via == "http" and not access:
        raise SystemExit("--target with --via http needs the server's JWT_ACCESS_SECRET")
    secrets_ = (access or secrets.token_urlsafe(48), secrets.token_urlsafe(48))
    print(f"machine: {json.dumps(machine())}", flush=True)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=args.concurrency, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        stores = await open_stores(args, http, secrets_)
        container = None
        poller = Redis.from_url(stores.redis_url, decode_responses=True)
        try:
            settings = load_settings(
                database_url=stores.database_url,
                redis_url=stores.redis_url,
                jwt_access_secret=secrets_[0],
                jwt_refresh_secret=secrets_[1],
                access_token_ttl_seconds=86400,
                data_dir=stores.workdir / "bench",
            )
            container = await build_container(settings)
            offset_ms, rtt_ms = await clock_offset_ms(poller)
            print(f"clock: Redis TIME - local = {offset_ms} ms (rtt {rtt_ms} ms)", flush=True)
            run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            run = Run(args, run_id, stores, http, container, secrets_[0], poller, offset_ms, rtt_ms)
            return await measure(run)
        except BaseException:
            if stores.server is not None:
                print(f"serve log (last lines):\n{stores.server.log_tail()}", file=sys.stderr)
            raise
        finally:
            await poller.aclose()
            if container is not None:
                await container.close()
            if stores.server is not None:
                code = await stores.server.stop()
                if code not in (0, None):
                    print(
                        f"serve stopped with {code}:\n{stores.server.log_tail()}", file=sys.stderr
                    )
            shutil.rmtree(stores.workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holds", type=int, default=100_000)
    parser.add_argument("--spread-seconds", type=float, default=60.0)
    parser.add_argument(
        "--via",
        choices=["http", "store"],
        default="store",
        help="take the holds through POST .../reserve or the app's HoldStore.reserve",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="reserves in flight at most")
    parser.add_argument(
        "--gap-seconds", type=float, default=10.0, help="from the last reserve to the first expiry"
    )
    parser.add_argument("--ttl-seconds", type=int, help="default: spread + gap (whole seconds)")
    parser.add_argument(
        "--margin-seconds", type=float, default=2.0, help="stop reserving this long before expiry"
    )
    parser.add_argument("--poll-ms", type=float, default=25.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=15.0, help="wait past the last expiresAt"
    )
    parser.add_argument("--workers", type=int, default=1, help="serve --workers")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--target", help="attach to a running server at this URL")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra serve env"
    )
    parser.add_argument("--out", type=Path, help="report path without suffix")
    parser.add_argument(
        "--py-spy", action="store_true", help="profile the server during the expiry phase"
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the whole run")
    args = parser.parse_args(argv)
    if not 1 <= args.holds <= 1_000_000 or not args.spread_seconds > 0:
        parser.error("--holds must be 1..1000000 and --spread-seconds positive")
    if args.ttl_seconds is None:
        args.ttl_seconds = math.ceil(args.spread_seconds + args.gap_seconds)
    if args.ttl_seconds <= args.spread_seconds + args.margin_seconds:
        parser.error("--ttl-seconds must exceed the spread plus the margin")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(bench(args), args.max_seconds)

    result = uvloop.run(bounded())
    for key in (
        "stock_lag_ms",
        "stock_lag_floor_ms",
        "release_lag_ms",
        "timer_expired_events_lag_ms",
        "released_by_layer",
    ):
        print(f"{key}: {json.dumps(result[key])}")
    print(f"cpu seconds during expiry: {json.dumps(result['cpu_seconds_during_expiry'])}")
    print("targets:\n  " + "\n  ".join(result["verdict"]))
    print("wrote " + ", ".join(result["files"]))
    return 0 if all("MISSED" not in v and "BROKEN" not in v for v in result["verdict"]) else 1


if __name__ == "__main__":
    sys.exit(main())
