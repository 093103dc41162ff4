"""The mixed soak: minutes of reserve, cancel, purchase and expiry across five drops.

    .venv/bin/python -m loadtests.soak                      # 5 minutes, the defaults
    .venv/bin/python -m loadtests.soak --seconds 20 --rate 60 --shoppers 16  # a quick run

Run it from the repository root. It passes when the run ends with zero 5xx, an answer
to every request, no answer contradicting another, and the books of every drop
balanced. What it does:

1. Stores: `--database-url` / `--redis-url` (default: DATABASE_URL / REDIS_URL), or
   embedded PostgreSQL and Valkey in a temporary folder when neither is given. A
   scratch PostgreSQL database is created for the run; the Redis database must be
   empty (or `--flush-redis`). Both are emptied at the end unless `--keep`.
2. Server: `sneakerdrop serve --workers N` with a short hold (`--hold-ttl`, so expiry
   happens all the time), the reconciler every `--reconcile-every` s (so it checks and
   repairs under traffic, many times), RATE_LIMITS=off.
3. Fixtures: `--users` customers and an admin (minted tokens, loadtests/fixtures.py),
   one live drop per `--stocks` entry with the `--limits` per-user limit.
4. Traffic (loadtests/soak_shoppers.py): `--shoppers` concurrent shoppers paced to
   `--rate` requests/s in all; the admin restocks a drop every `--restock-every` s and
   cancels the last drop at `--cancel-drop-at` of the run. A progress line every
   `--progress-every` s.
5. The end: traffic stops, every hold is left to expire (bounded wait: the hold time
   plus `--settle` s), then the books (loadtests/soak_tally.py): the app's own check
   (available + live holds + purchases == total, Redis against PostgreSQL),
   `sneakerdrop check` with the server's environment (exit code 0), PostgreSQL's
   purchases equal to Redis's sold count and to the purchases shoppers were told about,
   each total equal to the stock plus the acknowledged restocks.
6. Report: answers per route (status, problem code, latency), unexpected answers,
   anomalies, the books, the server's expiry / reconciler / error metrics, and a JSON
   file in `--out-dir` (loadtests/reports/, git-ignored).

Exit codes: 0 passed; 1 the run broke; 2 a 5xx, a request without an answer or an
anomaly (with `--strict` also an unexpected answer or an error the server logged);
3 the books do not balance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis_asyncio

from app.embedded.common import free_port
from app.services.invariant import DropCheck
from app.store.keys import DropKeys
from loadtests import servers
from loadtests import soak_tally as t
from loadtests.cpu import CpuMeter, cores_between, machine
from loadtests.fixtures import create_drop, create_users
from loadtests.invariant import drop_checks
from loadtests.soak_shoppers import Admin, Client, Mix, Pacer, Shopper
from loadtests.soak_tally import DropBook, Tally
from loadtests.stats import Latency

REPORTS = Path(__file__).resolve().parent / "reports"
METRICS = (
    "sneakerdrop_holds_expired_total",
    "sneakerdrop_holds_released_total",
    "sneakerdrop_purchases_total",
    "sneakerdrop_reconciler_runs_total",
    "sneakerdrop_reconciler_repairs_total",
    "sneakerdrop_claims_resolved_total",
    "sneakerdrop_background_errors_total",
    "sneakerdrop_redis_resubscribes_total",
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser(
        "Mixed soak: reserve, cancel, purchase and expiry across several drops."
    )
    p.add_argument("--seconds", type=float, default=300.0, help="of traffic")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of the server")
    p.add_argument(
        "--shoppers", type=int, default=96, help="concurrent shoppers (each ~4 req/s at most)"
    )
    p.add_argument("--rate", type=float, default=300.0, help="requests/s in all (0: unpaced)")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--stocks", type=_ints, default=[200, 300, 400, 500, 250], help="one per drop")
    p.add_argument(
        "--limits", type=_ints, default=[1000, 1000, 1000, 2, 1], help="per-user limit per drop"
    )
    p.add_argument("--hold-ttl", type=int, default=5, help="RESERVATION_TTL_SECONDS")
    p.add_argument("--reconcile-every", type=int, default=10, help="RECONCILE_INTERVAL_SECONDS")
    p.add_argument("--restock-every", type=float, default=20.0, help="s (0: never)")
    p.add_argument("--restock-min", type=int, default=100, help="units of one restock, at least")
    p.add_argument("--restock-max", type=int, default=400, help="units of one restock, at most")
    p.add_argument(
        "--cancel-drop-at", type=float, default=0.8, help="of the run, the last drop (0: never)"
    )
    p.add_argument("--purchase-share", type=float, default=Mix.purchase, help="of holds")
    p.add_argument("--cancel-share", type=float, default=Mix.cancel, help="of holds")
    p.add_argument("--progress-every", type=float, default=60.0, help="s between progress lines")
    p.add_argument("--settle", type=float, default=15.0, help="s beyond the hold time to wait")
    p.add_argument("--seed", type=int, help="of the shoppers' choices; random when unset")
    servers.store_options(p)
    p.add_argument("--keep", action="store_true", help="keep the scratch database and Redis data")
    p.add_argument(
        "--strict", action="store_true", help="unexpected answers and server-logged errors fail too"
    )
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--tag", default="soak", help="file name prefix of the JSON")
    args = p.parse_args(argv)
    if not args.stocks or len(args.stocks) != len(args.limits):
        p.error("--stocks and --limits need one entry per drop, as many of each")
    if min(*args.stocks, *args.limits, args.users, args.shoppers, args.workers) < 1:
        p.error("stocks, limits, --users, --shoppers and --workers must be positive")
    if not 1 <= args.restock_min <= args.restock_max:
        p.error("need 1 <= --restock-min <= --restock-max")
    if args.purchase_share + args.cancel_share + Mix.race + Mix.late > 1:
        p.error("--purchase-share + --cancel-share leave no room for the other fates")
    if args.seed is None:
        args.seed = secrets.randbits(32)
    return args


@dataclass
class Run:
    """What the run gathered, for the report."""

    tally: Tally = field(default_factory=Tally)
    books: dict[str, DropBook] = field(default_factory=dict)
    progress: list[str] = field(default_factory=list)
    traffic_seconds: float = 0.0
    drain_seconds: float = 0.0
    holds_wait_seconds: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)
    checks: list[DropCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    check_output: str = ""
    check_exit: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    server_errors_logged: list[str] = field(default_factory=list)


async def run(args: argparse.Namespace, workdir: Path) -> tuple[Run, t.Verdict]:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
    scratch = stores.database_url
    overrides = {"RECONCILE_INTERVAL_SECONDS": str(args.reconcile_every)}
    result = Run()
    product = None
    try:
        product = await servers.start_product(stores, free_port(), args.workers, workdir, overrides)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            await product.wait_ready(http)
        await soak(args, stores, product, result)
        await finish_checks(args, stores, product, workdir, result)
    finally:
        if product is not None:
            code = await product.stop()
            if code not in (0, None):
                print(f"product stopped with {code}:\n{product.log_tail()}", file=sys.stderr)
            result.server_errors_logged = logged_errors(product.log)
        if not args.keep:
            await servers.drop_database(maintenance_url, scratch)
            await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    warnings = []
    if result.server_errors_logged:
        warnings.append(f"the server logged {len(result.server_errors_logged)} errors")
    return result, t.verdict(result.tally, result.problems, strict=args.strict, warnings=warnings)


async def soak(
    args: argparse.Namespace, stores: servers.Stores, product: servers.ServerProcess, run: Run
) -> None:
    stamp = secrets.token_hex(4)
    users = await create_users(
        stores.database_url, stores.access_secret, args.users, prefix=f"soak-{stamp}"
    )
    (admin,) = await create_users(
        stores.database_url, stores.access_secret, 1, prefix=f"soak-admin-{stamp}", role="admin"
    )
    rng = random.Random(args.seed)
    connector = aiohttp.TCPConnector(limit=0)  # a connection per request in flight
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for i, (stock, limit) in enumerate(zip(args.stocks, args.limits, strict=True)):
            name = f"Soak {stamp} #{i + 1}"
            drop = await create_drop(http, product.url, admin.token, name, stock, limit)
            run.books[drop["id"]] = DropBook(drop["id"], name, stock)
        print(
            f"product {product.url} ({args.workers} workers), database "
            f"{stores.database_url.rsplit('/', 1)[-1]}, {len(users)} users, "
            f"{len(run.books)} drops {args.stocks}, hold {args.hold_ttl} s, seed {args.seed}",
            flush=True,
        )
        client = Client(http, product.url, run.tally, Pacer(args.rate))
        mix = Mix(purchase=args.purchase_share, cancel=args.cancel_share)
        shoppers = [
            Shopper(client, users, run.books, mix, random.Random(rng.random()), args.hold_ttl)
            for _ in range(args.shoppers)
        ]
        admin_side = Admin(client, admin.token, run.books, random.Random(rng.random()))
        meter = CpuMeter({"product": product.process.pid}, [stores.database_url, stores.redis_url])
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + args.seconds
        cpu_before = meter.sample()
        reporter = asyncio.create_task(progress(args, run, meter, began))
        background = [
            asyncio.create_task(
                admin_side.restocks(
                    args.restock_every, args.restock_min, args.restock_max, deadline
                )
            )
        ]
        if args.cancel_drop_at > 0:
            last = list(run.books.values())[-1]
            delay = args.seconds * args.cancel_drop_at
            background.append(asyncio.create_task(admin_side.cancel_drop(last, delay)))
        try:
            await asyncio.gather(*(s.run(deadline) for s in shoppers), *background)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        ended = loop.time()
        run.traffic_seconds = min(ended, deadline) - began
        run.drain_seconds = max(0.0, ended - deadline)
        run.cores = cores_between(cpu_before, meter.sample(), ended - began)
        tail = run.tally.take_window()
        if tail.requests:
            elapsed = ended - began
            since = elapsed - len(run.progress) * args.progress_every
            line = t.progress_line(elapsed, max(since, 1e-3), tail, {})
            run.progress.append(line)
            print(line + "  (end)", flush=True)


async def progress(args: argparse.Namespace, run: Run, meter: CpuMeter, began: float) -> None:
    loop = asyncio.get_running_loop()
    before = meter.sample()
    while True:
        await asyncio.sleep(args.progress_every)
        after = meter.sample()
        cores = cores_between(before, after, args.progress_every)
        before = after
        line = t.progress_line(
            loop.time() - began, args.progress_every, run.tally.take_window(), cores
        )
        run.progress.append(line)
        print(line, flush=True)


async def finish_checks(
    args: argparse.Namespace,
    stores: servers.Stores,
    product: servers.ServerProcess,
    workdir: Path,
    run: Run,
) -> None:
    bound = args.hold_ttl + args.settle
    run.holds_wait_seconds, live = await wait_no_holds(stores.redis_url, list(run.books), bound)
    if live:
        run.problems.append(f"holds still live {bound:.0f} s after the traffic stopped: {live}")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{product.url}/metrics") as response:
                run.metrics = t.metric_totals(await response.text(), METRICS)
    run.checks = await drop_checks(stores.database_url, stores.redis_url)
    run.problems += t.books_problems(run.checks, run.books)
    port = int(product.url.rsplit(":", 1)[1])
    run.check_exit, run.check_output = await sneakerdrop_check(stores, port, workdir)
    if run.check_exit != 0:
        run.problems.append(f"`sneakerdrop check` exited {run.check_exit}:\n{run.check_output}")


async def wait_no_holds(
    redis_url: str, drop_ids: list[str], bound: float
) -> tuple[float, dict[str, int]]:
    """Poll until no drop has a live hold; (seconds waited, live holds left by drop)."""
    client = redis_asyncio.Redis.from_url(redis_url)
    began = time.monotonic()
    try:
        while True:
            pipe = client.pipeline(transaction=False)
            for drop_id in drop_ids:
                pipe.hlen(DropKeys(drop_id).holds)
            counts = await pipe.execute()
            live = {d: int(n) for d, n in zip(drop_ids, counts, strict=True) if int(n)}
            waited = time.monotonic() - began
            if not live or waited > bound:
                return waited, live
            await asyncio.sleep(0.25)
    finally:
        await client.aclose()


async def sneakerdrop_check(stores: servers.Stores, port: int, workdir: Path) -> tuple[int, str]:
    """`sneakerdrop check` with the server's environment: (exit code, output)."""
    script = Path(sys.executable).with_name("sneakerdrop")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    data_dir = workdir / "check-data"
    data_dir.mkdir(exist_ok=True)
    env = servers.product_env(stores, port, data_dir)
    process = await asyncio.create_subprocess_exec(
        *argv,
        "check",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
        env=env,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), output.decode(errors="replace").rstrip()


def logged_errors(log: Path) -> list[str]:
    """Lines of the server's log at ERROR or worse, and tracebacks."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [
        line
        for line in lines
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]


# --- the report --------------------------------------------------------------------------


def report(args: argparse.Namespace, run: Run, verdict: t.Verdict) -> Path:
    tally = run.tally
    total = sum(tally.outcomes.values())
    print(
        f"\n{total} requests in {run.traffic_seconds:.0f} s "
        f"({total / max(run.traffic_seconds, 1e-3):.0f}/s of {args.rate:g} asked; "
        "in-flight sessions drained in "
        f"{run.drain_seconds:.1f} s), cores over the run: "
        + ", ".join(f"{k} {v:.2f}" for k, v in run.cores.items())
    )
    print("\nanswers by route:")
    print("\n".join(t.route_lines(tally)))
    print("\nevents: " + ", ".join(f"{k} {n}" for k, n in sorted(tally.events.items())))
    odd = t.unexpected(tally.outcomes)
    if odd:
        print("\nunexpected answers:")
        for (route, status, code), n in odd:
            print(f"  {route}: {status} {code} x{n}")
    print(f"\nholds all gone {run.holds_wait_seconds:.1f} s after the traffic stopped")
    print("\nbooks (PostgreSQL total / available / live holds / purchases; Redis sold):")
    for c in run.checks:
        book = run.books.get(c.drop_id)
        if book is None:
            continue
        print(
            f"  {book.name}: {c.total_pg} / {c.available} / {c.live_holds} / {c.sold_pg}; "
            f"{c.sold}  (stock {book.initial} + restocked {book.restocked}, "
            f"{len(book.purchases)} purchases acknowledged"
            + (", cancelled" if book.cancelled else "")
            + ")"
        )
    print(f"\n`sneakerdrop check` exit {run.check_exit}:\n{run.check_output}")
    if run.metrics:
        print("\nserver metrics:")
        for series, value in sorted(run.metrics.items()):
            print(f"  {series} {value:g}")
    if run.server_errors_logged:
        print(f"\nthe server logged {len(run.server_errors_logged)} errors, first ones:")
        print("\n".join(f"  {line}" for line in run.server_errors_logged[:10]))
    for sample in tally.error_samples[:5]:
        print(f"\n5xx / no answer: {sample}", file=sys.stderr)
    for anomaly in tally.anomalies[:20]:
        print(f"ANOMALY: {anomaly}", file=sys.stderr)
    path = write_summary(args, run, verdict)
    print(f"\nwrote {path}")
    if verdict.passed:
        print("\nPASSED: zero 5xx, every request answered, the books balance")
    else:
        print("\nFAILED:\n  " + "\n  ".join(verdict.reasons), file=sys.stderr)
    return path


def write_summary(args: argparse.Namespace, run: Run, verdict: t.Verdict) -> Path:
    tally = run.tally
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path: Path = args.out_dir / f"{args.tag}-{stamp}.json"
    latency = {route: Latency.of(ns) for route, ns in tally.latencies_ns.items()}
    summary: dict[str, Any] = {
        "argv": sys.argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "passed": verdict.passed,
        "exit_code": verdict.exit_code,
        "reasons": verdict.reasons,
        "traffic_seconds": run.traffic_seconds,
        "drain_seconds": run.drain_seconds,
        "holds_wait_seconds": run.holds_wait_seconds,
        "requests": sum(tally.outcomes.values()),
        "cores": run.cores,
        "answers": [
            {"route": route, "status": status, "code": code, "count": n}
            for (route, status, code), n in sorted(
                tally.outcomes.items(), key=lambda item: (item[0][0], item[0][1])
            )
        ],
        "unexpected": [
            {"route": route, "status": status, "code": code, "count": n}
            for (route, status, code), n in t.unexpected(tally.outcomes)
        ],
        "latency_ms": {route: asdict(v) for route, v in latency.items() if v is not None},
        "events": dict(tally.events),
        "anomalies": tally.anomalies[:200],
        "anomaly_count": len(tally.anomalies),
        "error_samples": tally.error_samples,
        "drops": [
            {
                **asdict(c),
                "name": run.books[c.drop_id].name,
                "initial": run.books[c.drop_id].initial,
                "restocked": run.books[c.drop_id].restocked,
                "purchases_acknowledged": len(run.books[c.drop_id].purchases),
                "purchases_unanswered": run.books[c.drop_id].purchase_unknown,
                "cancelled": run.books[c.drop_id].cancelled,
            }
            for c in run.checks
            if c.drop_id in run.books
        ],
        "problems": run.problems,
        "sneakerdrop_check": {"exit": run.check_exit, "output": run.check_output},
        "metrics": run.metrics,
        "server_errors_logged": run.server_errors_logged[:100],
        "progress": run.progress,
    }
    path.write_text(json.dumps(summary, indent=1))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        import uvloop

        found, verdict = uvloop.run(run(args, workdir))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)
    report(args, found, verdict)
    return verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
