"""The sized drop of the load tests: the size curve, and sizes_bench end to end at a tiny size."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Protocol

from loadtests import scenarios, sizes_bench, storm
from loadtests.size_curve import (
    CORE_SIZES,
    MAX_FALLBACKS,
    SIZE_CURVE,
    SIZE_RUN,
    curve_for,
    neighbours,
    reserve_body,
    size_request,
    size_run_stock,
)


class StoreUrls(Protocol):
    """tests/support/stores.py's, not imported: mypy checks loadtests/ without tests/."""

    database_url: str
    redis_url: str


def test_the_curve_puts_most_shoppers_and_stock_in_us_8_to_11() -> None:
    assert len(SIZE_RUN) == 20
    assert SIZE_RUN[0] == "US 4"
    assert SIZE_RUN[-1] == "US 13.5"
    assert CORE_SIZES == ["US 8", "US 8.5", "US 9", "US 9.5", "US 10", "US 10.5", "US 11"]
    for total in (0, 1, 7, 100, 299, 10_000):
        stock = size_run_stock(total)
        assert [label for label, _ in stock] == SIZE_RUN
        assert sum(units for _, units in stock) == total
    spread = dict(size_run_stock(1000))
    assert sum(spread[s] for s in CORE_SIZES) / 1000 >= 0.6
    assert spread["US 10"] == max(spread.values())
    rng = random.Random(7)
    drawn = Counter(size_request(rng, 2)[0] for _ in range(5000))
    assert 0.6 <= sum(drawn[s] for s in CORE_SIZES) / 5000 <= 0.76


def test_fallbacks_are_the_nearest_sizes_within_the_contract() -> None:
    assert neighbours("US 9.5")[:5] == ["US 10", "US 9", "US 10.5", "US 8.5", "US 11"]
    assert neighbours("US 4")[:3] == ["US 4.5", "US 5", "US 5.5"]
    assert neighbours("US 13.5")[:2] == ["US 13", "US 12.5"]
    rng = random.Random(3)
    for fallbacks in range(8):
        size, others = size_request(rng, fallbacks)
        assert len(others) == min(fallbacks, MAX_FALLBACKS)
        assert size not in others
        assert len(set(others)) == len(others)
    assert json.loads(reserve_body("US 9", ["US 9.5"])) == {
        "size": "US 9",
        "fallbackSizes": ["US 9.5"],
    }
    assert curve_for(["US 9", "US 10"]) == {"US 9": SIZE_CURVE["US 9"], "US 10": 12.0}
    assert curve_for(["S", "M", "L"]) == {"S": 1.0, "M": 1.0, "L": 1.0}


def test_the_cost_drops_ask_for_sold_out_sizes_first() -> None:
    hold, gone = scenarios.cost_sizes(True), scenarios.cost_sizes(False)
    assert [label for label, _ in hold] == [label for label, _ in gone]
    assert len(hold) == 20
    assert sorted(label for label, _ in hold) == sorted(SIZE_RUN)
    assert sum(units for _, units in hold) == scenarios.HOLD_PATH_STOCK  # the API's maximum
    asked = dict(hold)
    assert [asked[s] for s in scenarios.GONE[:5]] == [0] * 5
    assert asked[scenarios.GONE[5]] > 0
    assert all(dict(gone)[s] == 0 for s in scenarios.GONE)
    assert all(units > 0 for label, units in gone if label not in scenarios.GONE)
    assert storm.parse_args(["--scenarios", "sizes", "--no-reference"]).chosen == ["sizes"]


def test_sizes_bench_runs_end_to_end(stores: StoreUrls, tmp_path: Path) -> None:
    lua = shutil.which("redis-benchmark") is not None
    code = sizes_bench.main(
        [
            *("--database-url", stores.database_url, "--redis-url", stores.redis_url),
            *("--workers", "1", "--users", "30", "--stock", "20", "--size-fallbacks", "2"),
            *("--concurrency", "4", "--duration", "0.6", "--size-rounds", "2"),
            *("--warmup", "0.1", "--pause", "0", "--gen-procs", "0"),
            *(("--lua", "--lua-rounds", "1", "--lua-requests", "2000") if lua else ()),
            *("--lua-clients", "4", "--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0
    (path,) = tmp_path.glob("sizes-*.json")
    report = json.loads(path.read_text())
    assert report["problems"] == []  # the invariant, every size of every drop
    by_name: dict[str, list[dict[str, object]]] = {}
    for phase in report["phases"]:
        by_name.setdefault(phase["name"], []).append(phase)
    burst = by_name.pop("burst, sizes from the curve, 2 fallbacks")[0]
    outcomes = burst["outcomes"]
    assert isinstance(outcomes, dict)
    assert 0 < outcomes.get("201", 0) <= 20
    assert sum(outcomes.values()) == 30
    assert set(outcomes) <= {"201", "409 SIZE_SOLD_OUT", "409 SOLD_OUT"}
    wanted = {
        scenarios.PLAIN_HOLD: "201",
        scenarios.SIZED_HOLD: "201",
        scenarios.PLAIN_REFUSED: "409 SOLD_OUT",
        scenarios.SIZED_REFUSED: "409 SIZE_SOLD_OUT",
    }
    assert set(by_name) == set(wanted)
    for name, outcome in wanted.items():
        assert len(by_name[name]) == 2  # one per round
        for phase in by_name[name]:
            assert phase["outcomes"] == {outcome: phase["requests"]}, name
    targets = report["targets"]
    assert len(targets) == 2
    assert all(t["passed"] is not None for t in targets)  # measured, whatever the machine
    if lua:
        assert set(report["lua_rates"]) == {
            "hold, no sizes",
            "hold, 20 sizes",
            "refused, no sizes",
            "refused, 20 sizes",
        }
        assert set(report["lua_ratios"]) == {"hold", "refused"}
        assert all(ratio > 0 for ratio in report["lua_ratios"].values())
