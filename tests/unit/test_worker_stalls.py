"""Reading the product's stall metrics around a storm phase."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtests import worker_stalls


def _exposition(lags: list[float], pauses: dict[str, list[float]]) -> str:
    registry = CollectorRegistry()
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
    before = worker_stalls.parse(_exposition([0.001, 0.2], {"0": [0.001]}))
    after = worker_stalls.parse(
        _exposition(
            [0.001, 0.2, 0.002, 0.02, 0.07, 0.003], {"0": [0.001, 0.002], "2": [0.004, 0.03]}
        )
    )
    assert worker_stalls.between(before, after) == {
        "loop_lag_samples": 4,
        "loop_lag_over_10ms": 2,
        "loop_lag_over_50ms": 1,
        "gc_pauses": 3,
        "gc_over_5ms": 1,
        "gc_ms": 36.0,
    }


def test_other_metrics_are_ignored() -> None:
    text = "# TYPE other_total counter\nother_total 5.0\n"
    assert worker_stalls.parse(text) == {}
