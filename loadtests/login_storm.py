"""Login storm beside reserve: does a flood of bcrypt logins move reserve's p99?

    nice -n -10 .venv/bin/python -m loadtests.login_storm
    nice -n -10 .venv/bin/python -m loadtests.login_storm --rounds 3 --wait-quiet 30

Run it from the repository root. What it does:

1. Stores: `--database-url` / `--redis-url` (default: DATABASE_URL / REDIS_URL), or,
   when neither is given, embedded PostgreSQL and Valkey in a temporary folder, started
   by this process (so they run at its priority: under `nice -n -10` the stores, the
   server's event loops and the generator share one priority, and the password-hash
   processes run in SCHED_IDLE as they do in production). A scratch database for the run;
   the Redis database must be empty (or `--flush-redis`); both are emptied at the end.
2. Server: `sneakerdrop serve --workers N` (loadtests/servers.py) with RATE_LIMITS=off,
   so every login pays its bcrypt, BCRYPT_ROUNDS `--bcrypt-rounds` (the app's default,
   12) and PASSWORD_HASH_PROCESSES left at its default (1 per worker).
3. Users: `--users` shoppers with minted tokens (loadtests/fixtures.py) and
   `--login-users` accounts whose stored hash is a real bcrypt hash at that cost (one
   hash computed here and stored for all: checking it costs the same). Each reserve
   phase gets a fresh hold-path drop (10,000,000 units, 1,000 per user: every reserve
   is a 201 and no phase runs on a drop its predecessor filled).
4. Phases (loadtests/scenarios.py's `Bench.phase`, the storm's own machinery: the raw
   HTTP/1.1 generator, the open loop, the CPU meter, the worker stalls):
   - peak: reserve closed loop over `--concurrency` connections for `--duration` s;
   - `--rounds` rounds of a pair of reserve phases at `--load-fraction` of that peak
     (open loop, `--fixed-duration` s): "quiet" alone and "logins" with the login storm
     beside it, in the order AB, BA, AB... so neither always runs first;
   - the login storm: `--login-concurrency` connections, each sending its next login
     (the right password, a 200 with a new session row in PostgreSQL) as soon as the
     last one is answered, from just before the reserves start until they end. With
     more logins in flight than the workers have hash processes, every one always
     has a hash to run: the pool is saturated for the whole phase;
   - logins alone (`--login-duration` s): logins completed / CPU seconds the API
     processes used meanwhile = logins per second per core.
   `--wait-quiet S` first waits up to S s, before each reserve phase (before its login
   loop starts), for the rest of the machine to go idle (loadtests/cpu.py).
5. Report: every phase (throughput, p50 / p99 / p99.9, outcomes, cores by group, time
   waited for a core, the workers' stalls), the target (median p99 of the "logins"
   phases <= 1.5 x that of the "quiet" ones), logins per second per core, the machine
   with its load average at the start and the end; a JSON file in `--out-dir`
   (loadtests/reports/, git-ignored) unless `--no-json`.

Exit codes: 0 done (`--strict`: 2 when the target failed), 1 the run broke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bcrypt
import orjson

from app.config import Settings
from app.embedded.common import free_port
from loadtests import servers
from loadtests.cpu import CpuMeter, machine, wait_quiet
from loadtests.fixtures import PASSWORD, User, asyncpg_dsn, create_users
from loadtests.loadgen import REUSE_ORDERS, Generators, Plan, build_request, drive
from loadtests.report import phase_line, write_json
from loadtests.scenarios import HOLD_PATH_STOCK, Bench
from loadtests.stats import Phase, Target, summarise

REPORTS = Path(__file__).resolve().parent / "reports"
P99_RATIO = 1.5  # reserve p99 beside the login storm, at most this many times the quiet one
SCENARIO = "login storm"
QUIET, LOGINS = "reserve, quiet", "reserve beside logins"
LOGIN_LEAD = 0.5  # s the login loop runs before the reserve phase starts setting up
LOGIN_TAIL = 2.0  # s more than the reserves' own, for the phase's set-up (drop, /metrics)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = servers.bench_parser("Login storm beside reserve: reserve p99 with and without logins.")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers of the server")
    p.add_argument("--concurrency", type=int, default=64, help="connections of the peak phase")
    p.add_argument("--max-connections", type=int, default=256, help="most of a fixed-rate phase")
    p.add_argument("--duration", type=float, default=10.0, help="s of the peak phase")
    p.add_argument("--fixed-duration", type=float, default=10.0, help="s per reserve phase")
    p.add_argument("--load-fraction", type=float, default=0.7, help="of peak, reserve phases")
    p.add_argument("--rounds", type=int, default=2, help="pairs of quiet / logins phases")
    p.add_argument("--login-concurrency", type=int, default=16, help="logins in flight")
    p.add_argument("--login-duration", type=float, default=10.0, help="s of logins alone")
    p.add_argument("--login-users", type=int, default=200, help="accounts that log in")
    p.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=Settings.model_fields["bcrypt_rounds"].default,
        help="BCRYPT_ROUNDS of the server and of the login accounts' hash",
    )
    p.add_argument("--users", type=int, default=2000, help="shoppers who reserve")
    p.add_argument("--hold-ttl", type=int, default=900, help="RESERVATION_TTL_SECONDS, s")
    p.add_argument("--warmup", type=float, default=1.0, help="s not counted of a timed phase")
    p.add_argument("--pause", type=float, default=1.0, help="s between phases")
    p.add_argument("--reuse", choices=REUSE_ORDERS, default="fifo", help="as in storm.py")
    p.add_argument("--gen-procs", type=int, default=1, help="reserve generator processes")
    p.add_argument(
        "--wait-quiet",
        dest="quiet_wait",
        type=float,
        default=0.0,
        help="s to wait for an idle machine before each reserve phase",
    )
    servers.store_options(p)
    p.add_argument("--out-dir", type=Path, default=REPORTS)
    p.add_argument("--no-json", action="store_true", help="write no report file")
    p.add_argument("--strict", action="store_true", help="exit 2 when the target fails")
    # Bench.phase's own wait stays off: a logins phase waits before its login loop starts.
    p.set_defaults(wait_quiet=0.0)
    args = p.parse_args(argv)
    if min(args.workers, args.concurrency, args.rounds, args.login_concurrency) < 1:
        p.error("--workers, --concurrency, --rounds and --login-concurrency must be positive")
    if min(args.users, args.login_users) < 1 or not 0 < args.load_fraction <= 1.5:
        p.error("--users and --login-users are positive, --load-fraction lies in (0, 1.5]")
    return args


def login_requests(host: str, users: Sequence[User]) -> list[bytes]:
    """One right-password login per account, cycled by the generator."""
    return [
        build_request(
            "POST",
            "/api/auth/login",
            host,
            body=orjson.dumps({"email": user.email, "password": PASSWORD}),
        )
        for user in users
    ]


async def login_accounts(
    database_url: str, access_secret: str, count: int, rounds: int
) -> list[User]:
    """`count` accounts whose password is fixtures.PASSWORD hashed at `rounds`."""
    prefix = f"login-{int(time.time())}"
    users = await create_users(database_url, access_secret, count, prefix=prefix)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "UPDATE users SET password_hash = $1 WHERE email = ANY($2::text[])",
            hashed,
            [user.email for user in users],
        )
    finally:
        await connection.close()
    return users


class Storm:
    """The phases of one run, on Bench (loadtests/scenarios.py) and one meter."""

    def __init__(self, bench: Bench, meter: CpuMeter, logins: list[bytes]) -> None:
        self.bench = bench
        self.meter = meter
        self.logins = logins
        self.login_phases: list[Phase] = []
        self.logins_per_core: float | None = None
        self.login_cpu_seconds = 0.0

    @property
    def args(self) -> argparse.Namespace:
        return self.bench.args

    def login_plan(self, seconds: float) -> Plan:
        host, port = self.bench.product.host.rsplit(":", 1)
        connections = self.args.login_concurrency
        return Plan(host, int(port), self.logins, connections, duration=seconds)

    async def quiet(self) -> str | None:
        """`--wait-quiet`: wait for the rest of the machine to go idle; what it used last."""
        if not self.args.quiet_wait:
            return None
        other = await wait_quiet(self.meter, self.args.quiet_wait)
        return f"the rest of the machine used {other:.2f} cores before it"

    async def reserves(self, name: str, rate: float | None, waited: str | None = None) -> Phase:
        """One reserve phase on a fresh hold-path drop: closed loop (rate None) or fixed."""
        bench = self.bench
        if name != LOGINS:
            waited = await self.quiet()
        drop_id = await bench.drop(f"{name} {len(bench.phases)}", HOLD_PATH_STOCK)
        requests = bench.reserves(bench.product, [drop_id], len(bench.users))
        duration = self.args.duration if rate is None else self.args.fixed_duration
        phase = await bench.phase(
            SCENARIO, name, bench.product, requests, rate=rate, duration=duration, drop_id=drop_id
        )
        if phase.count("201") != phase.requests:
            phase.notes.append(f"not every reserve was a 201: {phase.outcomes}")
        if waited:
            phase.notes.append(waited)
        return phase

    async def beside_logins(self, rate: float) -> Phase:
        """A reserve phase with the login storm running from just before it to its end."""
        waited = await self.quiet()
        seconds = LOGIN_LEAD + self.args.fixed_duration + LOGIN_TAIL
        storm = asyncio.create_task(drive(self.login_plan(seconds)))
        try:
            await asyncio.sleep(LOGIN_LEAD)  # every hash process busy before the first reserve
            phase = await self.reserves(LOGINS, rate, waited)
        finally:
            record = await storm
        logins = summarise(
            [record],
            scenario=SCENARIO,
            name="logins beside reserve",
            server="product",
            connections=self.args.login_concurrency,
            rate=None,
            duration=seconds,
            warmup=0.0,
            run_began_ns=self.bench.run_began_ns,
        )
        self.login_phases.append(logins)
        p50 = logins.latency.p50 if logins.latency else 0.0
        phase.notes.append(
            f"beside it: {logins.requests} logins ({logins.count('200')} answered 200), "
            f"{logins.throughput:.1f}/s, p50 {p50:.0f} ms"
        )
        # The storm must cover the reserves' whole window: its first send before the
        # window opened, its last after the window closed.
        window = (phase.offset + self.args.warmup, phase.offset + self.args.fixed_duration)
        sends = [(start - self.bench.run_began_ns) / 1e9 for start in record.starts]
        if not sends or min(sends) > window[0] or max(sends) < window[1]:
            phase.notes.append("the login storm did not cover the whole measured window")
        return phase

    async def logins_alone(self) -> Phase:
        """The login storm with no reserves: logins answered 200 per API CPU second."""
        before = self.meter.sample()
        phase = await self.bench.phase(
            SCENARIO,
            "logins alone",
            self.bench.product,
            self.logins,
            duration=self.args.login_duration,
            connections=self.args.login_concurrency,
        )
        after = self.meter.sample()  # Bench.phase waited for the last answer, then paused
        self.login_cpu_seconds = after["product"] - before["product"]
        completed = phase.count("200")
        if self.login_cpu_seconds > 0:
            self.logins_per_core = completed / self.login_cpu_seconds
        phase.notes.append(
            f"{completed} logins answered 200 over {self.login_cpu_seconds:.1f} CPU s of the "
            f"API processes: {self.logins_per_core or 0:.2f} logins/s per core"
        )
        return phase

    async def run(self) -> None:
        peak = await self.reserves("reserve peak", None)
        rate = self.args.load_fraction * peak.throughput
        for round_ in range(self.args.rounds):
            for logins in (False, True) if round_ % 2 == 0 else (True, False):
                if logins:
                    await self.beside_logins(rate)
                else:
                    await self.reserves(QUIET, rate)
        await self.logins_alone()


def median_p99(phases: Sequence[Phase], name: str) -> float | None:
    values = [p.latency.p99 for p in phases if p.name == name and p.latency]
    return statistics.median(values) if values else None


def target(phases: Sequence[Phase], load_fraction: float) -> Target:
    quiet, busy = median_p99(phases, QUIET), median_p99(phases, LOGINS)
    name = (
        f"reserve p99 at {load_fraction:.0%} of peak beside a login storm <= {P99_RATIO:g} x "
        "without it (median of rounds)"
    )
    if quiet is None or busy is None:
        return Target(name, "not measured", None)
    return Target(
        name, f"{busy:.2f} ms vs {quiet:.2f} ms = {busy / quiet:.2f}x", busy <= P99_RATIO * quiet
    )


async def run(args: argparse.Namespace, workdir: Path) -> Storm:
    maintenance_url, redis_url, embedded = await servers.given_or_embedded(
        args.database_url, args.redis_url, workdir
    )
    await servers.require_empty(redis_url, args.flush_redis)
    stores = await servers.fresh_stores(maintenance_url, redis_url, args.hold_ttl)
    generators = Generators(args.gen_procs)
    product: servers.ServerProcess | None = None
    try:
        overrides = {"BCRYPT_ROUNDS": str(args.bcrypt_rounds)}
        product = await servers.start_product(stores, free_port(), args.workers, workdir, overrides)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await product.wait_ready(http)
            await generators.start()
            users = await create_users(
                stores.database_url, stores.access_secret, args.users, prefix="shopper"
            )
            (admin,) = await create_users(
                stores.database_url, stores.access_secret, 1, prefix="admin", role="admin"
            )
            accounts = await login_accounts(
                stores.database_url, stores.access_secret, args.login_users, args.bcrypt_rounds
            )
            bench = Bench.of_product(
                args, product, stores.database_url, redis_url, users, admin, http, generators
            )
            assert bench.meter is not None
            storm = Storm(bench, bench.meter, login_requests(bench.product.host, accounts))
            print(f"product {product.url}, {len(users)} shoppers, {len(accounts)} accounts")
            await storm.run()
    finally:
        generators.close()
        if product is not None and (code := await product.stop()) not in (0, None):
            print(f"product stopped with {code}:\n{product.log_tail()}", file=sys.stderr)
        await servers.drop_database(maintenance_url, stores.database_url)
        await servers.flush_redis(redis_url)
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    return storm


def finish(args: argparse.Namespace, storm: Storm, at_start: dict[str, Any]) -> int:
    phases = storm.bench.phases
    found = target(phases, args.load_fraction)
    at_end = machine()
    print("\nphases:", *[phase_line(p) for p in phases], sep="\n")
    print(f"\ntarget: [{found.verdict}] {found.name}: {found.measured}")
    print(f"logins per second per core: {storm.logins_per_core or 0:.2f}")
    print(f"load average: at start {at_start['load_average']}, at end {at_end['load_average']}")
    if not args.no_json:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / f"login-storm-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
        summary = {
            "argv": sys.argv,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": at_start,
            "load_average_at_end": at_end["load_average"],
            "targets": [{"name": found.name, "measured": found.measured, "passed": found.passed}],
            "logins_per_core": storm.logins_per_core,
            "login_cpu_seconds": storm.login_cpu_seconds,
        }
        write_json(path, summary, [*phases, *storm.login_phases])
        print(f"wrote {path}")
    return 2 if args.strict and found.passed is False else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    at_start = machine()
    print(f"machine: {at_start}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="login-storm-"))
    try:
        import uvloop

        storm = uvloop.run(run(args, workdir))
        return finish(args, storm, at_start)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
