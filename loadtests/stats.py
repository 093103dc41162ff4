"""The numbers of a run: percentiles, summaries, throughput, per-second buckets, targets.

Pure functions over what `loadtests.loadgen` records (nanoseconds of
`perf_counter_ns`) and over plain samples and event times (`Summary`, `max_in_window`),
so they can be checked without a server (loadtests/tests/test_storm_stats.py). Every
benchmark takes its percentiles from here.

A timed phase is judged on its measurement window: requests sent after the warm-up
(the first `warmup` seconds open connections, fill caches and let the servers'
allocators settle) and answers received before the phase's end. A phase bounded by a
count (the burst) is judged on all of it, from its start to its last answer.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from loadtests.loadgen import Recorded

Number = TypeVar("Number", int, float)

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def percentile(ordered: Sequence[Number], q: float) -> Number:
    """Nearest-rank percentile (q in 0..100) of an ascending, non-empty sequence.

    The rank is rounded before `ceil`: 99.9 / 100 * 1000 is 999.0000000000001 in
    floating point, which would make the p99.9 of 1,000 samples their maximum.
    """
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = max(1, math.ceil(round(q * len(ordered) / 100, 9)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Summary:
    """Percentiles of plain samples, in the samples' own unit."""

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


@dataclass(frozen=True)
class Latency(Summary):
    """Milliseconds, from nanoseconds of `perf_counter_ns`; with the p99.9."""

    p999: float

    @classmethod
    def of(cls, latencies_ns: Iterable[float]) -> Latency | None:
        ordered = sorted(latencies_ns)
        found = Summary.of(ordered)
        if found is None:
            return None
        in_ms = {k: v / NS_PER_MS for k, v in asdict(found).items() if k != "count"}
        return cls(count=found.count, p999=percentile(ordered, 99.9) / NS_PER_MS, **in_ms)


@dataclass(frozen=True)
class Bucket:
    """The answers received in one second of a phase."""

    second: int
    count: int
    p50: float
    p99: float
    span: float = 1.0  # seconds of the phase it covers (the last one can be shorter)

    @property
    def rate(self) -> float:
        return self.count / self.span if self.span > 0 else 0.0


def buckets(starts: Sequence[int], latencies: Sequence[int], began_ns: int) -> list[Bucket]:
    """Per-second count, p50 and p99 (ms) of the answers, by when each answer arrived."""
    per_second: dict[int, list[int]] = {}
    last = began_ns
    for start, latency in zip(starts, latencies, strict=True):
        last = max(last, start + latency)
        second = (start + latency - began_ns) // NS_PER_S
        per_second.setdefault(max(second, 0), []).append(latency)
    found = []
    for second in sorted(per_second):
        ordered = sorted(per_second[second])
        found.append(
            Bucket(
                second=second,
                count=len(ordered),
                p50=percentile(ordered, 50) / NS_PER_MS,
                p99=percentile(ordered, 99) / NS_PER_MS,
                span=min(1.0, (last - began_ns) / NS_PER_S - second),
            )
        )
    return found


def throughput(
    starts: Sequence[int], latencies: Sequence[int], window_start: int, window_end: int
) -> float:
    """Answers per second that arrived within [window_start, window_end)."""
    if window_end <= window_start:
        return 0.0
    done = sum(
        1
        for start, latency in zip(starts, latencies, strict=True)
        if window_start <= start + latency < window_end
    )
    return done * NS_PER_S / (window_end - window_start)


@dataclass
class Merged:
    """Several processes' records of one phase as one."""

    starts: list[int] = field(default_factory=list)
    latencies: list[int] = field(default_factory=list)
    lags: list[int] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    began_ns: int = 0
    ended_ns: int = 0
    connections: int = 0

    @classmethod
    def of(cls, records: Sequence[Recorded]) -> Merged:
        merged = cls(
            began_ns=min(r.began_ns for r in records),
            ended_ns=max(r.ended_ns for r in records),
        )
        for record in records:
            merged.starts += record.starts
            merged.latencies += record.latencies
            merged.lags += record.lags
            merged.firsts += record.firsts
            merged.outcomes.update(record.outcomes)
            merged.connections += record.connections
        return merged

    @property
    def last_answer_ns(self) -> int:
        return max(
            (s + lat for s, lat in zip(self.starts, self.latencies, strict=True)),
            default=self.began_ns,
        )


@dataclass
class Phase:
    """One measured phase against one server."""

    scenario: str
    name: str  # "hold path", "sold-out path", "burst", "GET /api/drops", ...
    server: str  # "product" or "reference"
    mode: str  # "max" (closed loop), "fixed" (open loop at `rate`), "burst" (closed, counted)
    connections: int
    rate: float | None
    requests: int  # answered, all of the phase
    measured: int  # within the window
    seconds: float  # the window's length
    throughput: float  # answers per second within the window
    latency: Latency | None
    outcomes: dict[str, int]
    generator_lag: Latency | None  # open loop: how late the generator sent
    buckets: list[Bucket]
    offset: float  # when the phase began, seconds since the run began (for the plot)
    # Each connection's first answer, which waited for the server to accept it.
    first_answers: Latency | None = None
    notes: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, by group
    stalls: dict[str, float] = field(default_factory=dict)  # loadtests/worker_stalls.py
    # Milliseconds each group spent runnable but waiting for a core (loadtests/cpu.py).
    waits: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        how = f"{self.rate:.0f}/s" if self.rate is not None else f"{self.connections} conns"
        return f"{self.scenario}: {self.name} [{self.server}, {self.mode} {how}]"

    def count(self, *prefixes: str) -> int:
        """Answers whose outcome starts with any of `prefixes` (`"201"`, `"409 SOLD_OUT"`)."""
        return sum(n for key, n in self.outcomes.items() if key.startswith(prefixes))

    @property
    def errors(self) -> int:
        """Answers that are neither 2xx nor an expected 4xx: 5xx and broken connections."""
        return self.count("5", "error")


def summarise(
    records: Sequence[Recorded],
    *,
    scenario: str,
    name: str,
    server: str,
    connections: int,
    rate: float | None,
    duration: float | None,
    warmup: float,
    run_began_ns: int,
) -> Phase:
    merged = Merged.of(records)
    if duration is not None:
        window_start = merged.began_ns + int(warmup * NS_PER_S)
        window_end = merged.began_ns + int(duration * NS_PER_S)
        mode = "max" if rate is None else "fixed"
    else:
        window_start, window_end = merged.began_ns, merged.last_answer_ns + 1
        mode = "burst" if rate is None else "fixed"
    measured = [
        lat
        for start, lat in zip(merged.starts, merged.latencies, strict=True)
        if start >= window_start
    ]
    return Phase(
        scenario=scenario,
        name=name,
        server=server,
        mode=mode,
        connections=connections,
        rate=rate,
        requests=len(merged.latencies),
        measured=len(measured),
        seconds=(window_end - window_start) / NS_PER_S,
        throughput=throughput(merged.starts, merged.latencies, window_start, window_end),
        latency=Latency.of(measured),
        outcomes=dict(sorted(merged.outcomes.items())),
        generator_lag=Latency.of(merged.lags) if rate is not None else None,
        buckets=buckets(merged.starts, merged.latencies, merged.began_ns),
        offset=(merged.began_ns - run_began_ns) / NS_PER_S,
        first_answers=Latency.of(merged.firsts),
    )


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    passed: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def ratio_target(name: str, value: float | None, base: float | None, at_least: float) -> Target:
    """value >= at_least * base."""
    if value is None or base is None or base <= 0:
        return Target(name, "not measured", None)
    ratio = value / base
    return Target(name, f"{value:,.0f} vs {base:,.0f} = {ratio:.2f}x", ratio >= at_least)


def limit_target(name: str, value: float | None, at_most: float, unit: str) -> Target:
    if value is None:
        return Target(name, "not measured", None)
    return Target(name, f"{value:.2f} {unit}", value <= at_most)
