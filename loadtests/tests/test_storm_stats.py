"""The statistics and verdicts of loadtests/storm.py (no server involved)."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path

import pytest

from loadtests.loadgen import Recorded, build_request, outcome, shares
from loadtests.report import load_phases, targets, write_json
from loadtests.stats import (
    NS_PER_MS,
    NS_PER_S,
    Bucket,
    Latency,
    Phase,
    buckets,
    limit_target,
    percentile,
    ratio_target,
    summarise,
    throughput,
)

MS = NS_PER_MS
S = NS_PER_S


def test_percentile_is_nearest_rank_without_float_error() -> None:
    values = list(range(1, 1001))
    assert percentile(values, 50) == 500
    assert percentile(values, 99.9) == 999  # 99.9 / 100 * 1000 is not exactly 999.0
    assert percentile(values, 100) == 1000
    assert percentile(values, 0) == 1
    assert percentile([7], 99.9) == 7
    with pytest.raises(ValueError, match="nothing"):
        percentile([], 50)


def test_latency_percentiles_are_nearest_rank_in_ms() -> None:
    latency = Latency.of([i * MS for i in range(1000, 0, -1)])  # 1..1000 ms, unordered
    assert latency is not None
    assert (latency.count, latency.p50, latency.p90, latency.p99) == (1000, 500, 900, 990)
    assert (latency.p999, latency.max, latency.mean) == (999, 1000, 500.5)
    assert Latency.of([]) is None


def test_buckets_group_answers_by_arrival_second() -> None:
    began = 10 * S
    starts = [began, began + S // 2, began + S, began + 2 * S]
    latencies = [4 * MS, 600 * MS, 1 * MS, 250 * MS]  # arrivals at 0.004, 1.1, 1.001, 2.25 s
    found = buckets(starts, latencies, began)
    assert found[:2] == [
        Bucket(second=0, count=1, p50=4.0, p99=4.0),
        Bucket(second=1, count=2, p50=1.0, p99=600.0),
    ]
    assert (found[2].second, found[2].count, found[2].p50, found[2].p99) == (2, 1, 250.0, 250.0)
    assert found[2].span == pytest.approx(0.25)
    assert buckets(starts, latencies, began)[-1].rate == pytest.approx(4.0)


def test_throughput_counts_answers_inside_the_window() -> None:
    starts = [0, 0, S, 2 * S]
    latencies = [S // 2, 3 * S, S // 2, S // 2]  # answers at 0.5, 3.0, 1.5, 2.5 s
    assert throughput(starts, latencies, 0, 2 * S) == 1.0  # 0.5 and 1.5 s in [0, 2)
    assert throughput(starts, latencies, S, 3 * S) == 1.0  # 1.5, 2.5 (3.0 excluded)
    assert throughput(starts, latencies, S, S) == 0.0


def record(began: int, answers: list[tuple[int, int, str]], ended: int) -> Recorded:
    return Recorded(
        starts=array("q", [a[0] for a in answers]),
        latencies=array("q", [a[1] for a in answers]),
        outcomes=Counter(a[2] for a in answers),
        began_ns=began,
        ended_ns=ended,
        connections=2,
    )


def product_phase(
    recorded: Recorded, scenario: str, name: str, rate: float, duration: float, warmup: float
) -> Phase:
    """One generator process's record as a product phase with 4 connections."""
    return summarise(
        [recorded],
        scenario=scenario,
        name=name,
        server="product",
        connections=4,
        rate=rate,
        duration=duration,
        warmup=warmup,
        run_began_ns=0,
    )


def test_summarise_leaves_out_the_warmup_and_merges_processes() -> None:
    one = record(0, [(0, 90 * MS, "201"), (S, 2 * MS, "201")], 3 * S)
    two = record(0, [(2 * S, 4 * MS, "409 SOLD_OUT"), (int(2.5 * S), 6 * MS, "error X")], 3 * S)
    phase = summarise(
        [one, two],
        scenario="reserve",
        name="hold path",
        server="product",
        connections=4,
        rate=None,
        duration=3.0,
        warmup=0.5,
        run_began_ns=-S,
    )
    assert phase.mode == "max"
    assert (phase.requests, phase.measured) == (4, 3)  # the 90 ms one was sent in the warm-up
    assert phase.latency is not None
    assert phase.latency.max == 6.0
    assert phase.seconds == 2.5
    assert phase.throughput == pytest.approx(3 / 2.5)
    assert phase.outcomes == {"201": 2, "409 SOLD_OUT": 1, "error X": 1}
    assert (phase.count("201"), phase.count("409"), phase.errors) == (2, 1, 1)
    assert phase.offset == 1.0
    assert phase.generator_lag is None


def test_summarise_a_counted_burst_runs_from_start_to_last_answer() -> None:
    phase = summarise(
        [record(0, [(0, 100 * MS, "201"), (0, 400 * MS, "409 SOLD_OUT")], S)],
        scenario="reserve",
        name="burst",
        server="reference",
        connections=2,
        rate=None,
        duration=None,
        warmup=1.0,
        run_began_ns=0,
    )
    assert (phase.mode, phase.measured) == ("burst", 2)
    assert phase.seconds == pytest.approx(0.4)
    assert phase.throughput == pytest.approx(5.0)


def test_outcome_reads_the_problem_code() -> None:
    body = b'{"type":"x","title":"Sold out","status":409,"detail":"d","code":"SOLD_OUT"}'
    assert outcome(409, body) == "409 SOLD_OUT"
    assert outcome(201, b'{"code":"ignored"}') == "201"
    assert outcome(502, b"Bad gateway") == "502"


def test_build_request() -> None:
    assert build_request("GET", "/healthz", "h:1") == b"GET /healthz HTTP/1.1\r\nHost: h:1\r\n\r\n"
    assert build_request("POST", "/r", "h:1", token="T") == (
        b"POST /r HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer T\r\nContent-Length: 0\r\n\r\n"
    )


def test_shares() -> None:
    assert shares(10, 3) == [4, 3, 3]
    assert shares(2, 2) == [1, 1]


def test_ratio_and_limit_targets() -> None:
    assert ratio_target("r", 800, 1000, 0.8).passed is True
    assert ratio_target("r", 799, 1000, 0.8).passed is False
    assert ratio_target("r", None, 1000, 0.8).verdict == "n/a"
    assert limit_target("p", 10.0, 10.0, "ms").passed is True
    assert limit_target("p", 10.1, 10.0, "ms").measured == "10.10 ms"


def test_targets_pick_the_right_phases() -> None:
    def phase(scenario: str, name: str, server: str, rate: float | None, per_second: int) -> Phase:
        answers = [(i * S // per_second, 2 * MS, "201") for i in range(per_second * 2)]
        return summarise(
            [record(0, answers, 2 * S)],
            scenario=scenario,
            name=name,
            server=server,
            connections=8,
            rate=rate,
            duration=2.0,
            warmup=0.0,
            run_began_ns=0,
        )

    phases = [
        phase("reserve", "hold path", "product", None, 90),
        phase("reserve", "hold path", "reference", None, 100),
        phase("reserve", "hold path", "product", 63.0, 63),
        phase("drops", "GET /healthz", "product", None, 100),
        phase("drops", "GET /api/drops", "product", None, 40),
    ]
    found = targets(phases, 0.7)
    # hold ratio 0.9, sold-out not run, hold p99 2 ms at 63/s, sold-out fixed not run,
    # listing 0.4 x healthz, big drop not run
    assert [t.passed for t in found] == [True, None, True, None, False, None]
    assert "63/s" in found[2].name


def test_big_drop_target_compares_the_median_p99_of_the_rounds() -> None:
    def rounds(name: str, latency_ms: float) -> Phase:
        recorded = record(0, [(0, int(latency_ms * MS), "201")], S)
        return product_phase(recorded, "big", name, rate=100.0, duration=1.0, warmup=0.0)

    big_drop = "1,000,000-unit drop, 100,000 live holds"
    phases = [
        rounds("100-unit drops", 2.0),
        rounds(big_drop, 3.0),
        rounds(big_drop, 4.5),
        rounds("100-unit drops", 4.0),
    ]
    big = targets(phases, 0.7)[-1]
    assert (big.passed, big.measured) == (False, "3.75 ms vs 3.00 ms = 1.25x")
    big = targets([*phases[:3], rounds("100-unit drops", 4.4)], 0.7)[-1]
    assert big.passed is True  # 3.75 <= 1.2 x 3.2
    # Four rounds: one slow phase on the big side moves the median, not the verdict.
    four = [*phases, rounds("100-unit drops", 3.0), rounds(big_drop, 3.2)]
    four += [rounds(big_drop, 40.0), rounds("100-unit drops", 3.5)]
    big = targets(four, 0.7)[-1]
    assert (big.passed, big.measured) == (True, "3.85 ms vs 3.25 ms = 1.18x")


def test_a_json_report_reads_back_into_the_same_phases(tmp_path: Path) -> None:
    one = record(0, [(0, 90 * MS, "201"), (S, 2 * MS, "201"), (2 * S, 3 * MS, "201")], 3 * S)
    one.lags.extend([0, MS])
    phase = product_phase(one, "reserve", "hold path", rate=3.0, duration=3.0, warmup=0.5)
    phase.cpu = {"product": 0.5}
    path = tmp_path / "run.json"
    write_json(path, {"title": "t"}, [phase])
    assert load_phases(json.loads(path.read_text())) == [phase]
