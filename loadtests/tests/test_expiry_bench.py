"""The lag maths of the expiry benchmark, loadtests/expiry_watch.py (no server involved)."""

from __future__ import annotations

import pytest

from loadtests.expiry_watch import (
    UnitBack,
    event_lags,
    expired_by_layer,
    iso_ms,
    layer_delta,
    release_lags,
    stock_lags,
    summary,
    worst_per_second,
)
from loadtests.stats import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="nothing"):
        percentile([], 50)


def test_summary_of_nothing_is_none() -> None:
    assert summary([]) is None
    assert summary([3, 1, 2]) == {"count": 3, "p50": 2, "p90": 3, "p99": 3, "max": 3, "mean": 2.0}


def test_kth_unit_back_pairs_with_kth_expiry_in_sorted_order() -> None:
    # Expiries given out of order; the stock starts at 5 and three units come back.
    expires = [1300, 1000, 1100]
    samples = [(990, 5), (1020, 5), (1050, 6), (1200, 7), (1400, 8)]
    units, missing = stock_lags(expires, samples, base=5)
    assert missing == 0
    assert units == [
        UnitBack(1000, 1050, 1020),
        UnitBack(1100, 1200, 1050),
        UnitBack(1300, 1400, 1200),
    ]
    assert [u.lag_ms for u in units] == [50, 100, 100]
    assert [u.lag_floor_ms for u in units] == [20, 0, 0]


def test_several_units_in_one_poll_share_its_time() -> None:
    units, missing = stock_lags([100, 200, 300], [(50, 0), (400, 3)], base=0)
    assert missing == 0
    assert [u.seen_ms for u in units] == [400, 400, 400]
    assert [u.lag_ms for u in units] == [300, 200, 100]
    assert [u.lag_floor_ms for u in units] == [0, 0, 0]


def test_units_never_back_are_counted_not_invented() -> None:
    units, missing = stock_lags([100, 200, 300], [(150, 10), (250, 11), (900, 11)], base=10)
    assert [u.expires_ms for u in units] == [100]
    assert missing == 2


def test_a_first_poll_already_showing_units_has_no_lower_bound_but_zero() -> None:
    units, _ = stock_lags([100], [(180, 1)], base=0)
    assert units == [UnitBack(100, 180, 100)]
    assert units[0].lag_floor_ms == 0


def test_stock_above_base_plus_holds_is_capped() -> None:
    # Someone restocked: more units than holds cannot pair with expiries that do not exist.
    units, missing = stock_lags([100], [(150, 9)], base=0)
    assert len(units) == 1
    assert missing == 0


def test_release_lags_read_release_lua_records() -> None:
    lags, states = release_lags(
        [
            "EXPIRED|u1|1000|400|1250",
            "EXPIRED|u2|2000|400|2010",
            "CANCELLED|u3|3000|400|2500",
            None,
        ]
    )
    assert lags == [250, 10]
    assert states == {"EXPIRED": 2, "CANCELLED": 1, "missing": 1}


def test_worst_lag_per_second_of_expiry() -> None:
    units = [UnitBack(1000, 1300, 1000), UnitBack(1900, 2000, 1900), UnitBack(2100, 3000, 2900)]
    assert worst_per_second(units, origin_ms=1000) == [(0, 300), (1, 900)]


def test_expired_by_layer_reads_prometheus_text() -> None:
    text = (
        "# HELP sneakerdrop_holds_expired_total Holds expired\n"
        "# TYPE sneakerdrop_holds_expired_total counter\n"
        'sneakerdrop_holds_expired_total{layer="keyspace"} 12.0\n'
        'sneakerdrop_holds_expired_total{layer="sweeper"} 30.0\n'
        "# HELP sneakerdrop_holds_expired_created Holds expired\n"
        "# TYPE sneakerdrop_holds_expired_created gauge\n"
        'sneakerdrop_holds_expired_created{layer="sweeper"} 1.7e9\n'
    )
    layers = expired_by_layer(text)
    assert layers == {"keyspace": 12.0, "sweeper": 30.0}
    assert layer_delta({"keyspace": 2.0}, layers) == {"keyspace": 10, "sweeper": 30}


def test_iso_ms() -> None:
    assert iso_ms("1970-01-01T00:00:01.250Z") == 1250


def test_event_lags_use_the_redis_clock_and_skip_unknown_holds() -> None:
    arrivals = {"r1": 1.250, "r2": 2.000, "other": 5.0}  # local seconds
    due = [("r1", 1000), ("r2", 1900)]
    # Redis runs 10 ms ahead of this host.
    assert event_lags(arrivals, due, offset_ms=10.0) == [260.0, 110.0]
