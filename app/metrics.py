"""Prometheus metrics, defined once.

With several worker processes, PROMETHEUS_MULTIPROC_DIR makes /metrics add up
every worker (set by `sneakerdrop serve --workers N`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "sneakerdrop_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
REQUEST_LATENCY = Histogram(
    "sneakerdrop_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SOCKETIO_FORWARDED = Counter(
    "sneakerdrop_socketio_forwarded_total",
    "Socket.IO requests handed to the worker holding their session",
    ["transport", "outcome"],
)
RESERVE_OUTCOMES = Counter("sneakerdrop_reserve_total", "Reserve outcomes", ["code"])
HOLDS_EXPIRED = Counter(
    "sneakerdrop_holds_expired_total", "Holds expired, by the layer that released them", ["layer"]
)
HOLDS_RELEASED = Counter("sneakerdrop_holds_released_total", "Holds released early", ["reason"])
PURCHASES = Counter("sneakerdrop_purchases_total", "Purchases recorded")
CLAIMS_RESOLVED = Counter(
    "sneakerdrop_claims_resolved_total",
    "Stale purchase claims settled by the sweeper",
    ["outcome"],
)
EXPIRY_LAG = Histogram(
    "sneakerdrop_expiry_lag_seconds",
    "From a hold's expiresAt to its unit being back in stock",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
RECONCILER_RUNS = Counter("sneakerdrop_reconciler_runs_total", "Reconciler passes completed")
RECONCILER_REPAIRS = Counter(
    "sneakerdrop_reconciler_repairs_total", "Drops rebuilt or repaired", ["kind"]
)
DRIFT = Gauge("sneakerdrop_drift_units", "Units off the invariant at the last check", ["drop"])
STOCK_PUSHES = Counter("sneakerdrop_stock_updates_total", "stock_update events pushed")
BACKGROUND_ERRORS = Counter(
    "sneakerdrop_background_errors_total", "Failures in background loops", ["task"]
)
BACKGROUND_PASS = Histogram(
    "sneakerdrop_background_pass_seconds",
    "How long one pass of a background loop took (sweeper, reconciler)",
    ["task"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_RECONNECTS = Counter(
    "sneakerdrop_redis_resubscribes_total", "Pub/sub resubscriptions after a Redis blip", ["task"]
)
GC_PAUSES = Histogram(
    "sneakerdrop_gc_pause_seconds",
    "Garbage-collector pauses of a worker, by generation",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
LOOP_LAG = Histogram(
    "sneakerdrop_event_loop_lag_seconds",
    "How late a worker's event loop ran a timer: time every request queued behind it waited",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
