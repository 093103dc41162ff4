"""Reading the product's stall metrics around a storm phase."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests import worker_stalls


def _exposition(
    lags: list[float],
    pauses: dict[str, list[float]],
    passes: dict[str, list[float]] | None = None,
    requests: tuple[tuple[str, float], ...] = (),
) -> str:
    registry = CollectorRegistry()
    background = Histogram(
        "sneakerdrop_background_pass_seconds", "", ["task"], registry=registry, buckets=(0.1, 1)
    )
    for task, values in (passes or {}).items():
        for value in values:
            background.labels(task).observe(value)
    answered = Histogram(
        "sneakerdrop_http_request_duration_seconds",
        "",
        ["method", "route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025),
    )
    for route, value in requests:  # two routes: the reading adds them up
        answered.labels("POST", route).observe(value)
    lag = Histogram(
        "sneakerdrop_event_loop_lag_seconds", "", registry=registry, buckets=(0.01, 0.05, 1)
    )
    gc = Histogram(
        "sneakerdrop_gc_pause_seconds", "", ["generation"], registry=registry, buckets=(0.005, 1)
    )
    for value in lags:
        lag.observe(value)
    for generation, values in pauses.items():
        for value in values:
            gc.labels(generation).observe(value)
    return generate_latest(registry).decode()


def test_a_phase_gets_what_was_observed_between_the_two_readings() -> None:
    before = worker_stalls.parse(
        _exposition(
            [0.001, 0.2],
            {"0": [0.001]},
            {"sweeper": [0.02], "reconciler": [0.3]},
            (("/a", 0.001),),
        )
    )
    after = worker_stalls.parse(
        _exposition(
            [0.001, 0.2, 0.002, 0.02, 0.07, 0.003],
            {"0": [0.001, 0.002], "2": [0.004, 0.03]},
            {"sweeper": [0.02, 0.01, 0.005], "reconciler": [0.3]},
            (("/a", 0.001), ("/b", 0.02), ("/a", 0.011), ("/b", 0.004)),
        )
    )
    stalls = worker_stalls.between(before, after)
    assert stalls == {
        "loop_lag_samples": 4,
        "loop_lag_over_10ms": 2,
        "loop_lag_over_50ms": 1,
        "gc_pauses": 3,
        "gc_over_5ms": 1,
        "gc_ms": 36.0,
        "requests": 3,
        "requests_over_10ms": 2,
        "sweeper_passes": 2,
        "sweeper_ms": 15.0,
        "reconciler_passes": 0,
        "reconciler_ms": 0.0,
    }
    assert worker_stalls.describe(stalls).endswith(
        "; 2 of 3 requests over 10 ms inside the app"
        "; sweeper 2 passes, 15.0 ms; reconciler 0 passes, 0.0 ms"
    )


def test_other_metrics_are_ignored() -> None:
    text = "# TYPE other_total counter\nother_total 5.0\n"
    assert worker_stalls.parse(text) == {}
