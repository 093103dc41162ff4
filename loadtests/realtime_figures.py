"""The real-time benchmark's figures: change visibility, event age, rates, the verdict.

Pure functions over the clients' recorded events and the server's change times
(each successful reserve's `createdAt`), checked without a server
(loadtests/tests/test_realtime_bench.py); the method is in realtime_bench.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loadtests.realtime_clients import Events
from loadtests.stats import Summary, max_in_window, mean_rate, min_gap


def parse_timestamp(text: str) -> float:
    """An API timestamp (ISO-8601 UTC with a `Z`) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_rates(text: str) -> list[float | None]:
    """`20,100,max` -> [20.0, 100.0, None]; None means as fast as the server answers."""
    rates: list[float | None] = []
    for part in text.split(","):
        item = part.strip().lower()
        if item == "max":
            rates.append(None)
            continue
        rate = float(item)
        if not rate > 0:
            raise ValueError(f"a rate must be positive or 'max', got {part!r}")
        rates.append(rate)
    if not rates:
        raise ValueError("no rate given")
    return rates


def phase_size(reserves: int, rate: float | None, max_seconds: float) -> int:
    """How many reserves a phase fires: `reserves`, capped at `max_seconds` of a finite rate."""
    if rate is None:
        return reserves
    return max(1, min(reserves, math.floor(rate * max_seconds)))


def event_ages(events: Events, total: int, changes: Sequence[float]) -> tuple[list[float], int]:
    """Arrival minus the time of the change that produced each event's value.

    `changes[k - 1]` is when the stock became `total - k`. Events still carrying `total`
    (the connect snapshot) are skipped; returns the ages and how many events carried a
    value no change explains.
    """
    ages: list[float] = []
    unexplained = 0
    for at, value in events:
        k = total - value
        if k == 0:
            continue
        if 1 <= k <= len(changes):
            ages.append(at - changes[k - 1])
        else:
            unexplained += 1
    return ages, unexplained


def visibility_delays(
    events: Events, total: int, changes: Sequence[float]
) -> tuple[list[float], int]:
    """For each change, the delay until this client first held a value reflecting it.

    Stock only falls during a reserve storm, so an event carrying `total - k` or less
    reflects change k. Returns the delays and how many changes the client never saw.
    """
    delays: list[float] = []
    j = 0
    for k, changed_at in enumerate(changes, start=1):
        value = total - k
        while j < len(events) and events[j][1] > value:
            j += 1
        if j == len(events):
            return delays, len(changes) - k + 1
        delays.append(events[j][0] - changed_at)
    return delays, 0


@dataclass
class GroupFigures:
    clients: int
    disconnects: int
    still_connected: int
    got_final: int
    visibility: Summary | None
    never_seen: int
    event_age: Summary | None
    unexplained_events: int
    events_per_client: float
    rate_mean: Summary | None  # per client: events/s over its span
    max_in_1s: int
    min_gap: float | None
    loop_lag_p99: float
    loop_lag_max: float


@dataclass
class PhaseFigures:
    rate: float | None
    reserves: int
    ok: int
    failed: dict[str, int]
    storm_seconds: float
    achieved_rate: float
    response: Summary | None
    server_pushes: float | None
    server_max_in_1s: int | None  # the most sends of the drop in any 1-second window
    server_min_gap: float | None
    gc_pauses: Summary | None  # with --gc-log: the API's full collections in the phase
    cpu_cores: dict[str, float]
    groups: dict[str, GroupFigures] = field(default_factory=dict)


def group_figures(
    takes: Sequence[dict[str, Any]], reached: int, total: int, changes: Sequence[float]
) -> GroupFigures:
    delays: list[float] = []
    ages: list[float] = []
    rates: list[float] = []
    never_seen = unexplained = events = max_window = 0
    gap: float | None = None
    clients = 0
    for take in takes:
        for raw in take["events"]:
            clients += 1
            client_events: Events = sorted((float(t), int(v)) for t, v in raw)
            seen, missed = visibility_delays(client_events, total, changes)
            delays += seen
            never_seen += missed
            aged, odd = event_ages(client_events, total, changes)
            ages += aged
            unexplained += odd
            times = [t for t, v in client_events if v < total]
            events += len(times)
            max_window = max(max_window, max_in_window(times))
            rate = mean_rate(times)
            if rate is not None:
                rates.append(rate)
            least = min_gap(times)
            if least is not None:
                gap = least if gap is None else min(gap, least)
    return GroupFigures(
        clients=clients,
        disconnects=sum(t["disconnects"] for t in takes),
        still_connected=sum(t["still_connected"] for t in takes),
        got_final=reached,
        visibility=Summary.of(delays),
        never_seen=never_seen,
        event_age=Summary.of(ages),
        unexplained_events=unexplained,
        events_per_client=events / clients if clients else 0.0,
        rate_mean=Summary.of(rates),
        max_in_1s=max_window,
        min_gap=gap,
        loop_lag_p99=max((t["lag"]["p99"] for t in takes), default=0.0),
        loop_lag_max=max((t["lag"]["max"] for t in takes), default=0.0),
    )


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def summary_line(label: str, summary: Summary | None) -> str:
    if summary is None:
        return f"    {label}: no samples"
    return (
        f"    {label}: p50 {ms(summary.p50)}, p90 {ms(summary.p90)}, p99 {ms(summary.p99)}, "
        f"max {ms(summary.max)} ({summary.count:,} samples)"
    )


def phase_report(figures: PhaseFigures) -> str:
    rate = "max" if figures.rate is None else f"{figures.rate:g}/s"
    failed = ", ".join(f"{n} x {status}" for status, n in figures.failed.items()) or "none"
    pushes = "-" if figures.server_pushes is None else f"{figures.server_pushes:.0f}"
    lines = [
        f"phase rate={rate}: {figures.reserves} reserves, {figures.ok} ok, failed {failed}; "
        f"{figures.storm_seconds:.2f} s = {figures.achieved_rate:.0f} reserves/s",
        summary_line("reserve response", figures.response),
        f"    stock_update pushes for the drop (server /metrics): {pushes}; sent, most in any "
        f"1 s: {figures.server_max_in_1s}, smallest gap {ms(figures.server_min_gap)}",
        "    CPU cores used: "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in figures.cpu_cores.items()),
    ]
    if figures.gc_pauses is not None:
        pauses = figures.gc_pauses
        lines.append(
            f"    API full GC pauses: {pauses.count}, p50 {ms(pauses.p50)}, max {ms(pauses.max)}, "
            f"{ms(pauses.mean * pauses.count)} in all"
        )
    if figures.cpu_cores.get("other", 0.0) > 0.2:
        lines.append(
            "    WARNING: other processes used CPU during this phase; figures are not quiet"
        )
    for kind, g in figures.groups.items():
        rate_mean = (
            "-"
            if g.rate_mean is None
            else f"mean {g.rate_mean.mean:.2f}/s, highest client {g.rate_mean.max:.2f}/s"
        )
        lines += [
            f"  {kind} clients: {g.clients} measured, {g.disconnects} disconnects, "
            f"{g.still_connected} still connected, {g.got_final} got the final value",
            summary_line("change visibility", g.visibility)
            + (f", {g.never_seen} change x client pairs never seen" if g.never_seen else ""),
            summary_line("event age", g.event_age)
            + (f", {g.unexplained_events} unexplained" if g.unexplained_events else ""),
            f"    events per client and drop: {g.events_per_client:.1f} in all; rate {rate_mean}; "
            f"most in any 1 s: {g.max_in_1s}; smallest gap {ms(g.min_gap)}",
            f"    client event loop lag: p99 {ms(g.loop_lag_p99)}, max {ms(g.loop_lag_max)}",
        ]
    return "\n".join(lines)


def verdict(
    phases: Sequence[PhaseFigures], clients: int, connected: int, target_ms: float, max_rate: float
) -> list[str]:
    """The three targets, judged on the load clients' worst phase.

    The rate is judged on what the server sent (the most sends of a drop in any
    1-second window, from the Socket.IO channel) and on each client's mean rate. A
    client's own 1-second window is reported beside it: one event delayed on its way
    (a busy client loop, a pause in the server) lands next to the following one, which
    says nothing about how often the server sent.
    """

    def worst(kind: str) -> dict[str, float]:
        groups = [p.groups[kind] for p in phases if kind in p.groups]
        return {
            "disconnects": max((g.disconnects for g in groups), default=0),
            "p99": max((g.visibility.p99 for g in groups if g.visibility), default=math.inf),
            "age_p99": max((g.event_age.p99 for g in groups if g.event_age), default=math.inf),
            "window": max((g.max_in_1s for g in groups), default=0),
            "mean": max((g.rate_mean.max for g in groups if g.rate_mean), default=0.0),
        }

    def met(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    load = worst("load")
    probes = worst("probe") if any("probe" in p.groups for p in phases) else None
    sent_window = max((p.server_max_in_1s or 0 for p in phases), default=0)
    recorded = all(p.server_max_in_1s is not None for p in phases)
    latency_ok = max(load["p99"], load["age_p99"]) * 1000 <= target_ms
    rate_ok = recorded and sent_window <= max_rate and load["mean"] <= max_rate
    lines = [
        f"{clients} clients: {connected} connected, {load['disconnects']:.0f} disconnected "
        f"during the run: {met(connected == clients and load['disconnects'] == 0)}",
        f"p99 change-to-client <= {target_ms:g} ms (load clients, worst phase): visibility "
        f"{ms(load['p99'])}, event age {ms(load['age_p99'])}: {met(latency_ok)}",
        f"<= {max_rate:g} events/s per drop: sent, most in any 1 s "
        f"{sent_window if recorded else '-'}; highest client mean {load['mean']:.2f}/s: "
        f"{met(rate_ok)}",
    ]
    windows = f"load {load['window']:.0f}"
    if probes:
        windows += f", probe {probes['window']:.0f}"
        lines.append(
            f"(probe clients: visibility p99 {ms(probes['p99'])}, event age p99 "
            f"{ms(probes['age_p99'])})"
        )
    lines.append(f"(received, most in any 1 s at a client: {windows})")
    return lines
