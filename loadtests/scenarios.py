"""The storm's scenarios: what each one sets up, fires and compares.

- `drops`: `--live-drops` live drops (a few holds and buyers each, so the views carry
  some), then `GET /healthz` and `GET /api/drops` at full speed on the product.
- `reserve`: per server (product, reference) a storm drop of `--stock` units and a
  hold-path drop with stock to spare. The burst (`--burst` reserves by distinct users
  as fast as `--concurrency` connections get answers), the sold-out path (the storm
  drop hammered for `--duration` s) and the hold path (every reserve succeeds) on
  both servers; then the product alone at `--load-fraction` of its own peak on both
  paths (open loop); then purchases and cancels of the product's storm holds.
- `big`: a `--big-stock` drop holding `--big-holds` live holds (made through
  reserve.lua directly), against many `--small-stock` drops taking the same number of
  reserves at the same fixed rate: every measured reserve succeeds on both sides.
  `--big-rounds` rounds, the order flipped each round; the target compares the
  median of each side's p99s (the mean before 6 Dec, with two rounds).
- `sizes`: a drop of `--stock` units over a 20-size run (US 4 to 13.5, stock along
  loadtests/size_curve.py's curve, most of it in US 8-11); every user asks for a size
  drawn from the same curve with `--size-fallbacks` neighbouring sizes as fallbacks,
  in one burst. Then `--size-rounds` rounds of the cost of sizes (`size_cost_rounds`):
  reserve on a drop without sizes against reserve on a 20-size drop asking for a
  sold-out size with 5 fallbacks, on the hold path (the last fallback has units: 201)
  and on the refusal path (all six asked are gone, others are not: 409 SIZE_SOLD_OUT,
  against 409 SOLD_OUT), the order flipped each round.

Every drop allows `PER_USER_LIMIT` holds per user, so a refusal on the sold-out path
is SOLD_OUT (not LIMIT_REACHED, which the script checks first) and the hold path
never runs a user out of allowance.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import redis.asyncio as redis_asyncio

from loadtests import worker_stalls
from loadtests.cpu import BUSY_OTHER_CORES, CpuMeter, cores_between, wait_quiet
from loadtests.fixtures import User, api, create_drop, seed_holds
from loadtests.invariant import invariant_problems
from loadtests.loadgen import Generators, Plan, build_request
from loadtests.report import phase_line
from loadtests.servers import ServerProcess
from loadtests.size_curve import (
    CORE_SIZES,
    SIZE_RUN,
    SIZE_SEED,
    reserve_body,
    size_request,
    size_run_stock,
)
from loadtests.stats import Phase, Target, ratio_target, summarise

PER_USER_LIMIT = 1000  # the API's maximum
HOLD_PATH_STOCK = 10_000_000  # the API's maximum: a hold-path phase never sells out
DEFAULT_FIXED_RATE = 500.0  # reserves/s for `big` when no peak was measured in the run
SETTLE_SECONDS = 2.0  # after writing the big drop's holds, before measuring


@dataclass(frozen=True)
class Endpoint:
    name: str  # "product" or "reference"
    url: str

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


@dataclass
class Bench:
    args: argparse.Namespace
    product: Endpoint
    reference: Endpoint | None
    redis_url: str
    hold_ttl_seconds: int
    users: list[User]
    admin: User
    http: aiohttp.ClientSession
    generators: Generators
    run_began_ns: int
    phases: list[Phase] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)  # drop id -> total stock
    granted: Counter[str] = field(default_factory=Counter)  # drop id -> 201s seen
    peaks: dict[str, float] = field(default_factory=dict)  # path -> product's max throughput
    meter: CpuMeter | None = None

    @classmethod
    def metered(
        cls,
        args: argparse.Namespace,
        servers: tuple[Endpoint, Endpoint | None],
        processes: Sequence[ServerProcess],
        database_url: str,
        redis_url: str,
        users: list[User],
        admin: User,
        http: aiohttp.ClientSession,
        generators: Generators,
    ) -> Bench:
        """A bench on (product, reference or None), holds of `--hold-ttl` s, the started
        server `processes` (each under its own name) and both stores metered."""
        product, reference = servers
        bench = cls(
            args,
            product,
            reference,
            redis_url,
            args.hold_ttl,
            users,
            admin,
            http,
            generators,
            time.perf_counter_ns(),
        )
        pids = {process.name: process.process.pid for process in processes}
        bench.meter = CpuMeter(pids, [database_url, redis_url])
        return bench

    @classmethod
    def of_product(
        cls,
        args: argparse.Namespace,
        product: ServerProcess,
        database_url: str,
        redis_url: str,
        users: list[User],
        admin: User,
        http: aiohttp.ClientSession,
        generators: Generators,
    ) -> Bench:
        """A bench on one product server and no reference (see `metered`)."""
        servers = (Endpoint("product", product.url), None)
        return cls.metered(
            args, servers, [product], database_url, redis_url, users, admin, http, generators
        )

    async def invariant(self, database_url: str) -> list[str]:
        """The app's invariant for every drop the bench made, printed; the problems."""
        checked, problems = await invariant_problems(
            database_url, self.redis_url, self.drops, self.granted
        )
        print(f"invariant: {checked} drops checked, {len(problems)} problems", flush=True)
        return problems

    @property
    def servers(self) -> list[Endpoint]:
        return [self.product] + ([self.reference] if self.reference else [])

    async def drop(self, name: str, stock: int, sizes: Sequence[tuple[str, int]] = ()) -> str:
        """A drop of `stock` units, or of `sizes` (label, units) when given (their sum)."""
        extra: dict[str, Any] = {}
        if sizes:
            stock = sum(units for _, units in sizes)
            extra["sizes"] = [{"size": label, "totalStock": units} for label, units in sizes]
        made = await create_drop(
            self.http, self.product.url, self.admin.token, name, stock, PER_USER_LIMIT, **extra
        )
        self.drops[made["id"]] = stock
        return str(made["id"])

    def reserves(
        self,
        endpoint: Endpoint,
        drop_ids: list[str],
        count: int,
        bodies: Sequence[bytes] = (),
    ) -> list[bytes]:
        """`count` reserve requests, request i by user i (cycled) on drop_ids[i // per],
        with body i (cycled) when `bodies` are given (the sizes asked), else none."""
        per = math.ceil(count / len(drop_ids))
        return [
            build_request(
                "POST",
                f"/api/drops/{drop_ids[i // per]}/reserve",
                endpoint.host,
                self.users[i % len(self.users)].token,
                bodies[i % len(bodies)] if bodies else b"",
            )
            for i in range(count)
        ]

    async def phase(
        self,
        scenario: str,
        name: str,
        endpoint: Endpoint,
        requests: list[bytes],
        *,
        rate: float | None = None,
        duration: float | None = None,
        count: int | None = None,
        connections: int | None = None,
        drop_id: str | None = None,
    ) -> Phase:
        host, port = endpoint.host.rsplit(":", 1)
        if connections is None:
            connections = self.args.concurrency if rate is None else self.args.max_connections
        if count is not None:
            connections = max(1, min(connections, count))
        plan = Plan(
            host,
            int(port),
            requests,
            connections,
            rate=rate,
            duration=duration,
            count=count,
            reuse=self.args.reuse,
        )
        quiet = None
        if self.meter is not None and self.args.wait_quiet:
            quiet = await wait_quiet(self.meter, self.args.wait_quiet)
        stalls_before = await worker_stalls.read(self.http, endpoint.url)
        before = self.meter.sample() if self.meter else {}
        waits_before = self.meter.waits() if self.meter else {}
        wall = time.monotonic()
        records = await self.generators.run(plan)
        wall = time.monotonic() - wall
        after = self.meter.sample() if self.meter else {}
        waits_after = self.meter.waits() if self.meter else {}
        stalls_after = await worker_stalls.read(self.http, endpoint.url)
        phase = summarise(
            records,
            scenario=scenario,
            name=name,
            server=endpoint.name,
            connections=connections,
            rate=rate,
            duration=duration,
            warmup=self.args.warmup if duration is not None else 0.0,
            run_began_ns=self.run_began_ns,
        )
        phase.cpu = cores_between(before, after, wall)
        phase.waits = {
            name: round((waits_after[name] - waits_before.get(name, 0.0)) * 1000, 1)
            for name in waits_after
        }
        if stalls_before is not None and stalls_after is not None:
            phase.stalls = worker_stalls.between(stalls_before, stalls_after)
        if wall >= 0.5 and phase.cpu.get("other", 0.0) > BUSY_OTHER_CORES:
            phase.notes.append(f"other processes used {phase.cpu['other']:.2f} cores: not quiet")
        if quiet is not None:
            phase.notes.append(f"the rest of the machine used {quiet:.2f} cores before it")
        if drop_id is not None:
            self.granted[drop_id] += phase.count("201")
        if phase.errors:
            phase.notes.append(f"{phase.errors} errors (5xx or broken connections)")
        self.phases.append(phase)
        print(phase_line(phase), flush=True)
        await asyncio.sleep(self.args.pause)  # let the servers drain between phases
        return phase


async def drops_scenario(bench: Bench) -> None:
    drop_ids = [
        await bench.drop(f"Listing {i}", bench.args.small_stock)
        for i in range(bench.args.live_drops)
    ]
    for drop_id in drop_ids:  # some holds and recent buyers in every view
        for user in bench.users[:3]:
            held = await api(
                bench.http, "POST", f"{bench.product.url}/api/drops/{drop_id}/reserve", user.token
            )
            bench.granted[drop_id] += 1
            if user is not bench.users[0]:
                await api(
                    bench.http,
                    "POST",
                    f"{bench.product.url}/api/reservations/{held['id']}/purchase",
                    user.token,
                )
    async with bench.http.get(f"{bench.product.url}/api/drops") as response:
        listed = len(await response.json())
    host = bench.product.host
    duration = bench.args.duration
    await bench.phase(
        "drops",
        "GET /healthz",
        bench.product,
        [build_request("GET", "/healthz", host)],
        duration=duration,
    )
    listing = await bench.phase(
        "drops",
        "GET /api/drops",
        bench.product,
        [build_request("GET", "/api/drops", host)],
        duration=duration,
    )
    listing.notes.append(f"the listing holds {listed} drops")


async def reserve_scenario(bench: Bench) -> None:
    args = bench.args
    storm: dict[str, str] = {}
    hold: dict[str, str] = {}
    for server in bench.servers:
        storm[server.name] = await bench.drop(f"Storm ({server.name})", args.stock)
        hold[server.name] = await bench.drop(f"Hold path ({server.name})", HOLD_PATH_STOCK)
    burst = args.burst or len(bench.users)
    sustained = len(bench.users)  # one request per user, cycled
    for server in bench.servers:
        drop_id = storm[server.name]
        phase = await bench.phase(
            "reserve",
            "burst",
            server,
            bench.reserves(server, [drop_id], burst),
            count=burst,
            drop_id=drop_id,
        )
        expected = min(args.stock, burst)
        if phase.count("201") != expected:
            phase.notes.append(f"{phase.count('201')} holds granted, {expected} expected")
    for path, drops in (("sold-out path", storm), ("hold path", hold)):
        for server in bench.servers:
            drop_id = drops[server.name]
            phase = await bench.phase(
                "reserve",
                path,
                server,
                bench.reserves(server, [drop_id], sustained),
                duration=args.duration,
                drop_id=drop_id,
            )
            wanted = "201" if path == "hold path" else "409 SOLD_OUT"
            if phase.count(wanted) != phase.requests:
                phase.notes.append(f"not every answer was {wanted}: {phase.outcomes}")
            if server is bench.product:
                bench.peaks[path] = phase.throughput
    # The target's phases (named by the path alone), then `--curve`: latency against load.
    fixed = [(None, args.load_fraction), *((f"{f:.0%}", f) for f in args.curve)]
    for share, fraction in fixed:
        for path, drops in (("hold path", hold), ("sold-out path", storm)):
            drop_id = drops[bench.product.name]
            rate = fraction * bench.peaks[path]
            if share is None and args.rate:
                rate = args.rate
            await bench.phase(
                "reserve",
                path if share is None else f"{path} at {share} of peak",
                bench.product,
                bench.reserves(bench.product, [drop_id], sustained),
                rate=rate,
                duration=args.fixed_duration,
                drop_id=drop_id,
            )
    await purchase_and_cancel(bench, storm[bench.product.name])


async def live_holds(redis_url: str, drop_id: str) -> list[str]:
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        ids = cast(list[str], await client.hkeys(f"{{d:{drop_id}}}:holds"))
        return sorted(ids)
    finally:
        await client.aclose()


async def purchase_and_cancel(bench: Bench, drop_id: str) -> None:
    """Buy `--purchase-share` of the drop's holds, cancel `--cancel-share`, leave the rest."""
    tokens = {user.id: user.token for user in bench.users}
    holds = await live_holds(bench.redis_url, drop_id)
    buy = holds[: round(len(holds) * bench.args.purchase_share)]
    cancel = holds[len(buy) : len(buy) + round(len(holds) * bench.args.cancel_share)]
    host = bench.product.host

    def owner(reservation_id: str) -> str:
        return tokens[reservation_id.split(".")[1]]

    if buy:
        requests = [
            build_request("POST", f"/api/reservations/{rid}/purchase", host, owner(rid))
            for rid in buy
        ]
        phase = await bench.phase(
            "reserve", "purchase", bench.product, requests, count=len(requests)
        )
        if phase.count("201") != len(buy):
            phase.notes.append(f"{phase.count('201')} of {len(buy)} purchases recorded")
    if cancel:
        requests = [
            build_request("DELETE", f"/api/reservations/{rid}", host, owner(rid)) for rid in cancel
        ]
        phase = await bench.phase("reserve", "cancel", bench.product, requests, count=len(cancel))
        if phase.count("204") != len(cancel):
            phase.notes.append(f"{phase.count('204')} of {len(cancel)} cancels answered 204")


async def big_scenario(bench: Bench) -> None:
    """Rounds of (small drops, big drop) at one fixed rate, the order flipped each round
    (ABBA...), so neither side always runs first after the 100,000 holds were written."""
    args = bench.args
    big = await bench.drop("Big drop", args.big_stock)
    seeded = await seed_holds(bench.redis_url, big, args.big_holds, bench.hold_ttl_seconds * 1000)
    bench.granted[big] += seeded
    # Below the knee of the latency curve, so that the comparison measures the drop's
    # size rather than a queue that machine noise happens to build on one side.
    rate = args.rate or args.big_fraction * bench.peaks.get("hold path", 0.0) or DEFAULT_FIXED_RATE
    count = round(rate * args.fixed_duration)
    per_round = math.ceil(count / args.small_stock)
    small = [
        await bench.drop(f"Small drop {i}", args.small_stock)
        for i in range(per_round * args.big_rounds)
    ]
    await asyncio.sleep(SETTLE_SECONDS)
    product = bench.product
    for round_ in range(args.big_rounds):
        fresh = small[round_ * per_round : (round_ + 1) * per_round]
        sides = [
            (f"{args.small_stock}-unit drops", bench.reserves(product, fresh, count), None),
            (
                f"{args.big_stock:,}-unit drop, {seeded:,} live holds",
                bench.reserves(product, [big], count),
                big,
            ),
        ]
        for name, requests, drop_id in sides if round_ % 2 == 0 else sides[::-1]:
            phase = await bench.phase(
                "big",
                name,
                product,
                requests,
                rate=rate,
                duration=args.fixed_duration,
                drop_id=drop_id,
            )
            if phase.count("201") != phase.requests:
                phase.notes.append(f"not every reserve was granted: {phase.outcomes}")


async def sizes_scenario(bench: Bench) -> None:
    """The sized storm drop's burst, then the rounds of `size_cost_rounds`."""
    args = bench.args
    stock = size_run_stock(args.stock)
    drop_id = await bench.drop("Sized storm", 0, stock)
    rng = random.Random(SIZE_SEED)
    asks = [size_request(rng, args.size_fallbacks) for _ in range(len(bench.users))]
    burst = args.burst or len(bench.users)
    phase = await bench.phase(
        "sizes",
        f"burst, sizes from the curve, {args.size_fallbacks} fallbacks",
        bench.product,
        bench.reserves(bench.product, [drop_id], burst, [reserve_body(s, f) for s, f in asks]),
        count=burst,
        drop_id=drop_id,
    )
    wanted = Counter(size for size, _ in asks[:burst])
    core = sum(wanted[s] for s in CORE_SIZES) / max(sum(wanted.values()), 1)
    phase.notes.append(
        f"asked first (US 8-11: {core:.0%}): " + ", ".join(f"{s} {wanted[s]}" for s in SIZE_RUN)
    )
    async with bench.http.get(f"{bench.product.url}/api/drops/{drop_id}") as response:
        left = {s["size"]: s["availableStock"] for s in (await response.json())["sizes"]}
    remaining = ", ".join(f"{s} {n}" for s, n in left.items() if n)
    phase.notes.append(f"left after it: {remaining or 'nothing'}")
    total = sum(units for _, units in stock)
    if phase.count("201") + sum(left.values()) != total:
        phase.notes.append(f"{phase.count('201')} held + {sum(left.values())} left != {total}")
    await size_cost_rounds(bench, args.size_rounds)


# The cost of sizes: the same reserve, on a drop without sizes and on a 20-size drop where
# the size asked and its first four fallbacks are gone (each call tries six sizes).
PLAIN_HOLD, SIZED_HOLD = "hold path, no sizes", "hold path, 20 sizes, 5 fallbacks"
PLAIN_REFUSED, SIZED_REFUSED = "sold-out path, no sizes", "size-sold-out path, 20 sizes"
SIZE_COST_RATIO = 0.9  # issue 20: sized reserve >= 0.9 x the throughput without sizes
GONE = SIZE_RUN[:6]  # asked: the first five have no units (the sixth has, on the hold path)
SPARE_UNITS = 10  # each size nobody asks for


def cost_sizes(hold_path: bool) -> list[tuple[str, int]]:
    """A 20-size drop: GONE's first five sold out; the sixth holds the hold path's stock
    (gone too on the refusal path); the other fourteen SPARE_UNITS each."""
    spare = [(label, SPARE_UNITS) for label in SIZE_RUN if label not in GONE]
    last = HOLD_PATH_STOCK - SPARE_UNITS * len(spare) if hold_path else 0
    return [*((label, 0) for label in GONE[:-1]), (GONE[-1], last), *spare]


async def size_cost_rounds(bench: Bench, rounds: int) -> None:
    """`rounds` rounds of four closed-loop phases, fresh drops each round: with and without
    sizes on the hold path, then on the refusal path, the order flipped each round."""
    asked = reserve_body(GONE[0], GONE[1:])
    for round_ in range(rounds):
        plain_hold = await bench.drop(f"No sizes {round_}", HOLD_PATH_STOCK)
        sized_hold = await bench.drop(f"20 sizes {round_}", 0, cost_sizes(True))
        plain_gone = await bench.drop(f"No sizes, none left {round_}", 0)
        sized_gone = await bench.drop(f"20 sizes, asked gone {round_}", 0, cost_sizes(False))
        pairs = [
            ((PLAIN_HOLD, plain_hold, b"", "201"), (SIZED_HOLD, sized_hold, asked, "201")),
            (
                (PLAIN_REFUSED, plain_gone, b"", "409 SOLD_OUT"),
                (SIZED_REFUSED, sized_gone, asked, "409 SIZE_SOLD_OUT"),
            ),
        ]
        for pair in pairs:
            for name, drop_id, body, wanted in pair if round_ % 2 == 0 else pair[::-1]:
                requests = bench.reserves(
                    bench.product, [drop_id], len(bench.users), [body] if body else ()
                )
                phase = await bench.phase(
                    "sizes",
                    name,
                    bench.product,
                    requests,
                    duration=bench.args.duration,
                    drop_id=drop_id,
                )
                if phase.count(wanted) != phase.requests:
                    phase.notes.append(f"not every answer was {wanted}: {phase.outcomes}")


def size_targets(phases: Sequence[Phase]) -> list[Target]:
    """Sized reserve >= SIZE_COST_RATIO x reserve without sizes, per path: the medians of
    each side's throughput over the rounds (one slow second on a busy machine, on either
    side, does not decide it)."""
    found = []
    for plain, sized in ((PLAIN_HOLD, SIZED_HOLD), (PLAIN_REFUSED, SIZED_REFUSED)):
        sides = [
            [p.throughput for p in phases if p.scenario == "sizes" and p.name == name]
            for name in (plain, sized)
        ]
        base, value = (statistics.median(side) if side else None for side in sides)
        found.append(
            ratio_target(
                f"{sized} >= {SIZE_COST_RATIO} x {plain} (req/s, median of {len(sides[1])})",
                value,
                base,
                SIZE_COST_RATIO,
            )
        )
    return found


SCENARIOS: dict[str, Any] = {
    "drops": drops_scenario,
    "reserve": reserve_scenario,
    "big": big_scenario,
    "sizes": sizes_scenario,
}
