"""The timing and statistics maths of the real-time benchmark (no server involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.realtime_bench import gc_pauses
from loadtests.realtime_clients import split
from loadtests.realtime_figures import (
    event_ages,
    parse_rates,
    parse_timestamp,
    phase_size,
    visibility_delays,
)
from loadtests.stats import Summary, max_in_window, mean_rate, min_gap, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    thousand = [float(v) for v in range(1, 1001)]
    assert percentile(thousand, 99.9) == 999.0  # not the maximum, despite float rounding
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="nothing"):
        percentile([], 50)


def test_summary_sorts_and_reports_none_for_no_samples() -> None:
    summary = Summary.of([0.3, 0.1, 0.2, 0.4])
    assert summary == Summary(count=4, p50=0.2, p90=0.4, p99=0.4, max=0.4, mean=0.25)
    assert Summary.of([]) is None


def test_parse_timestamp_reads_api_milliseconds() -> None:
    assert parse_timestamp("2026-01-01T00:00:00.250Z") == 1767225600.25


def test_parse_rates() -> None:
    assert parse_rates("20, 100,MAX") == [20.0, 100.0, None]
    with pytest.raises(ValueError, match="positive"):
        parse_rates("0")
    with pytest.raises(ValueError, match="could not convert"):
        parse_rates("fast")


def test_phase_size_caps_a_rated_phase_by_time() -> None:
    assert phase_size(2000, None, 30) == 2000
    assert phase_size(2000, 100, 30) == 2000
    assert phase_size(2000, 20, 30) == 600
    assert phase_size(2000, 0.01, 30) == 1


def test_split_spreads_evenly() -> None:
    assert split(1000, 3) == [334, 333, 333]
    assert split(2, 3) == [1, 1, 0]


# Stock 5 -> 2 through three changes at t = 10.0, 10.05 and 10.30.
TOTAL = 5
CHANGES = [10.0, 10.05, 10.30]


def test_event_age_is_arrival_minus_the_change_that_made_the_value() -> None:
    events = [(9.0, 5), (10.12, 3), (10.35, 2)]  # the connect snapshot, then two pushes
    ages, unexplained = event_ages(events, TOTAL, CHANGES)
    assert ages == pytest.approx([0.07, 0.05])
    assert unexplained == 0


def test_event_age_counts_values_no_change_explains() -> None:
    ages, unexplained = event_ages([(10.2, 1), (10.3, 6)], TOTAL, CHANGES)
    assert (ages, unexplained) == ([], 2)


def test_visibility_is_the_first_event_reflecting_each_change() -> None:
    # The push at 10.12 carries 3 (changes 1 and 2 coalesced); 10.35 carries 2.
    events = [(9.0, 5), (10.12, 3), (10.35, 2)]
    delays, never = visibility_delays(events, TOTAL, CHANGES)
    assert delays == pytest.approx([0.12, 0.07, 0.05])
    assert never == 0


def test_visibility_counts_changes_a_client_never_saw() -> None:
    delays, never = visibility_delays([(10.12, 3)], TOTAL, CHANGES)
    assert delays == pytest.approx([0.12, 0.07])
    assert never == 1
    assert visibility_delays([], TOTAL, CHANGES) == ([], 3)


def test_max_in_window_is_half_open() -> None:
    ten_per_second = [i / 10 for i in range(11)]  # 0.0 .. 1.0
    assert max_in_window(ten_per_second) == 10  # 1.0 is outside [0.0, 1.0)
    assert max_in_window([0.0, 0.5, 0.99, 1.2]) == 3
    assert max_in_window([]) == 0


def test_rate_and_gap() -> None:
    times = [0.0, 0.1, 0.25, 0.5]
    assert mean_rate(times, min_span=0.5) == pytest.approx(6.0)
    assert mean_rate(times) is None  # half a second is too short to call a rate
    assert mean_rate([i / 10 for i in range(21)]) == pytest.approx(10.0)
    assert mean_rate([1.0], min_span=0.0) is None
    assert min_gap(times) == pytest.approx(0.1)
    assert min_gap([1.0]) is None


def test_gc_pauses_reads_every_process_log_within_the_window(tmp_path: Path) -> None:
    (tmp_path / "gc-1.log").write_text("100.000 0.2100\n105.500 0.1000\n")
    (tmp_path / "gc-2.log").write_text("101.250 0.0500\n")
    (tmp_path / "sitecustomize.py").write_text("")  # not a log
    assert sorted(gc_pauses(tmp_path, 100.0, 102.0)) == [0.05, 0.21]
    assert gc_pauses(None, 0.0, 1e12) == []
