"""The product's own stall metrics over a phase: its /metrics read before and after.

A worker records how late its event loop ran a timer (`sneakerdrop_event_loop_lag_seconds`,
every 0.25 s), how long each garbage collection took (`sneakerdrop_gc_pause_seconds`),
how long each background pass took (`sneakerdrop_background_pass_seconds`: the
sweeper's and the reconciler's, on the event loop of the worker that holds their
lease) and how long each request took from the app's call to its answer
(`sneakerdrop_http_request_duration_seconds`, which leaves out the wait in the socket
and the loop before it); the difference of the two readings says whether a phase's
tail came with stalls, background work or slow requests inside the worker or not.
The reference has no such metrics and is not read.
"""

from __future__ import annotations

from collections import defaultdict

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

LOOP_LAG = "sneakerdrop_event_loop_lag_seconds"
GC_PAUSES = "sneakerdrop_gc_pause_seconds"
BACKGROUND = "sneakerdrop_background_pass_seconds"
REQUESTS = "sneakerdrop_http_request_duration_seconds"  # from the app's call to its answer
BACKGROUND_TASKS = ("sweeper", "reconciler")

# (metric, "count" | "sum" | bucket bound) -> value, summed over workers and generations;
# background passes: (metric, "<task> count" | "<task> sum")
Reading = dict[tuple[str, str], float]


def parse(text: str) -> Reading:
    reading: Reading = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name not in (LOOP_LAG, GC_PAUSES, BACKGROUND, REQUESTS):
            continue
        for sample in family.samples:
            if family.name == BACKGROUND:
                for part in ("count", "sum"):
                    if sample.name.endswith(f"_{part}"):
                        reading[(family.name, f"{sample.labels['task']} {part}")] += sample.value
            elif sample.name.endswith("_bucket"):
                reading[(family.name, sample.labels["le"])] += sample.value
            elif sample.name.endswith("_count"):
                reading[(family.name, "count")] += sample.value
            elif sample.name.endswith("_sum"):
                reading[(family.name, "sum")] += sample.value
    return dict(reading)


async def read(http: aiohttp.ClientSession, url: str) -> Reading | None:
    """The server's reading, or None when it has no /metrics to give."""
    try:
        async with http.get(f"{url}/metrics") as response:
            if response.status != 200:
                return None
            return parse(await response.text())
    except aiohttp.ClientError:
        return None


def over(reading: Reading, metric: str, bound: str) -> float:
    """Observations above a bucket bound (`"0.01"`)."""
    return reading.get((metric, "count"), 0.0) - reading.get((metric, bound), 0.0)


def between(before: Reading, after: Reading) -> dict[str, float]:
    """What the phase added: loop-lag samples and those over 10 and 50 ms; GC pauses,
    those over 5 ms and their total milliseconds; background passes of each task and
    their total milliseconds."""

    def delta(metric: str, key: str) -> float:
        return after.get((metric, key), 0.0) - before.get((metric, key), 0.0)

    def delta_over(metric: str, bound: str) -> float:
        return over(after, metric, bound) - over(before, metric, bound)

    return {
        "loop_lag_samples": delta(LOOP_LAG, "count"),
        "loop_lag_over_10ms": delta_over(LOOP_LAG, "0.01"),
        "loop_lag_over_50ms": delta_over(LOOP_LAG, "0.05"),
        "gc_pauses": delta(GC_PAUSES, "count"),
        "gc_over_5ms": delta_over(GC_PAUSES, "0.005"),
        "gc_ms": round(delta(GC_PAUSES, "sum") * 1000, 1),
        "requests": delta(REQUESTS, "count"),
        "requests_over_10ms": delta_over(REQUESTS, "0.01"),
    } | {
        key: value
        for task in BACKGROUND_TASKS
        for key, value in (
            (f"{task}_passes", delta(BACKGROUND, f"{task} count")),
            (f"{task}_ms", round(delta(BACKGROUND, f"{task} sum") * 1000, 1)),
        )
    }


def describe(stalls: dict[str, float]) -> str:
    return (
        f"loop lag > 10 ms in {stalls['loop_lag_over_10ms']:.0f} of "
        f"{stalls['loop_lag_samples']:.0f} samples (> 50 ms: {stalls['loop_lag_over_50ms']:.0f}); "
        f"GC {stalls['gc_pauses']:.0f} pauses, {stalls['gc_over_5ms']:.0f} over 5 ms, "
        f"{stalls['gc_ms']:.1f} ms in all"
        + (
            f"; {stalls['requests_over_10ms']:.0f} of {stalls['requests']:.0f} requests"
            " over 10 ms inside the app"
            if "requests" in stalls  # reports written before it was read
            else ""
        )
        + "".join(
            f"; {task} {stalls[f'{task}_passes']:.0f} passes, {stalls[f'{task}_ms']:.1f} ms"
            for task in BACKGROUND_TASKS
            if f"{task}_passes" in stalls  # reports of servers without the metric
        )
    )
