"""The purchase storm runs end to end at a tiny size: both servers, every phase, the checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from loadtests import purchase_storm


class StoreUrls(Protocol):
    """tests/support/stores.py's, not imported: mypy checks loadtests/ without tests/."""

    database_url: str
    redis_url: str


def test_purchase_storm_runs_end_to_end(stores: StoreUrls, tmp_path: Path) -> None:
    code = purchase_storm.main(
        [
            *("--database-url", stores.database_url, "--redis-url", stores.redis_url),
            *("--holders", "20", "--warmup-holders", "5", "--concurrency", "4"),
            *("--fixed-seconds", "0.5", "--workers", "1", "--pause", "0"),
            *("--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0  # 3: a purchase answered 201 without exactly one row, or drift
    (path,) = tmp_path.glob("purchase-storm-*.json")
    report = json.loads(path.read_text())
    phases = {(p["server"], p["name"]): p for p in report["phases"]}
    assert set(phases) == {
        (server, name) for server in ("product", "reference") for name in ("burst", "fixed")
    }
    for phase in phases.values():
        # every holder bought once, and every purchase was a new one
        assert phase["outcomes"] == {"201": phase["requests"]}
        assert phase["latency"]["p99"] > 0
        assert phase["cpu"]["postgres"] >= 0
    assert phases[("product", "burst")]["requests"] == 20
    assert phases[("product", "fixed")]["rate"] > 0
    assert report["problems"] == []
    assert [t["passed"] is not None for t in report["targets"]] == [True, True]
    assert report["purchases_per_api_core"] > 0
