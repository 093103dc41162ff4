"""The fair-access benchmarks: their timetable and SLOWLOG reading, and each tool end to end
at a tiny size on real stores."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Protocol

import pytest

from loadtests import access_bench, draw_bench, queue_storm


class StoreUrls(Protocol):
    """tests/support/stores.py's, not imported: mypy checks loadtests/ without tests/."""

    database_url: str
    redis_url: str


def test_the_timetable_joins_everyone_in_the_window_then_polls_every_period() -> None:
    table = queue_storm.timetable(300, join_window=6.0, poll_seconds=2.0, until=10.0, seed=1)
    assert sorted(i for _, i in table.joins) == list(range(300))
    assert all(0 <= due < 6e9 for due, _ in table.joins)
    assert [d for d, _ in table.joins] == sorted(d for d, _ in table.joins)
    assert [d for d, _ in table.polls] == sorted(d for d, _ in table.polls)
    joined = {i: due for due, i in table.joins}
    polls: dict[int, list[int]] = {}
    for due, i in table.polls:
        polls.setdefault(i, []).append(due)
    for shopper, dues in polls.items():
        expected = list(range(joined[shopper] + 2_000_000_000, 10_000_000_000, 2_000_000_000))
        assert sorted(dues) == expected
    # A shopper joining at t polls at t+2, t+4, ... before 10 s: 2 to 4 polls each.
    assert set(Counter(len(d) for d in polls.values())) <= {2, 3, 4}
    assert len(polls) == 300
    # The same seed, the same timetable (runs compare).
    again = queue_storm.timetable(300, join_window=6.0, poll_seconds=2.0, until=10.0, seed=1)
    assert again == table


def test_slowlog_entries_are_grouped_by_the_script_they_ran() -> None:
    shas = {"a" * 40: "draw_run", "b" * 40: "draw_settle"}
    entries = [
        {"command": f"EVALSHA {'a' * 40} 10 k1 k2".encode(), "duration": 1200},
        {"command": f"evalsha {'A' * 40} 10 k1".encode(), "duration": 4800},
        {"command": f"EVALSHA {'b' * 40} 10 k1", "duration": 300},
        {"command": b"HGET k f", "duration": 9000},
        {"command": f"EVALSHA {'c' * 40} 1 k".encode(), "duration": 7000},
    ]
    found = draw_bench.script_times(entries, shas)
    assert found["draw_run"].calls == 2
    assert found["draw_run"].max_us == 4800
    assert found["draw_run"].summary()["max_ms"] == 4.8
    assert found["draw_settle"].calls == 1
    assert found["draw_settle"].max_us == 300


def redis_option(stores: StoreUrls) -> list[str]:
    """A redis-server of the run's own when there is one (SLOWLOG is per instance)."""
    if shutil.which("redis-server") or shutil.which("valkey-server"):
        return []
    return ["--redis-url", stores.redis_url, "--flush-redis"]


@pytest.mark.slow
def test_draw_bench_draws_every_entry_and_times_the_scripts(
    stores: StoreUrls, tmp_path: Path
) -> None:
    code = draw_bench.main(
        [
            *("--database-url", stores.database_url, *redis_option(stores)),
            *("--entries", "400", "--stock", "40", "--fallbacks", "2"),
            *("--enter-seconds", "3", "--poll-ms", "5", "--fairness-poll-ms", "20"),
            *("--chunk-sweep", "50", "--sweep-entries", "200", "--settle-timeout", "60"),
            *("--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0
    (path,) = tmp_path.glob("draw-*.json")
    report = json.loads(path.read_text())
    assert report["problems"] == []
    statuses = report["statuses"]
    assert statuses["W"] == 40  # every unit given
    # Standby, or lost: sizes the 40 units left at none (the curve over 20 sizes).
    assert statuses["S"] + statuses.get("L", 0) == 360
    assert report["entry_replies"] == {"CREATED": 400}
    timeline = report["timeline_ms"]
    assert timeline["notes"] == []
    assert 0 <= timeline["first_call_ms"] <= timeline["done_seen_ms"]
    assert timeline["done_seen_ms"] <= timeline["seed_seen_ms"] <= timeline["changes_drained_ms"]
    run = report["scripts"]["draw_run"]
    assert run["calls"] >= 1  # 400 entries: a few budgeted calls of the leader's
    assert run["max_ms"] > 0
    assert report["scripts"]["draw_settle"]["calls"] >= 1
    sweep = report["chunk_sweep"]["50"]
    assert sweep["entries"] == 200
    # 200 entries at a budget of 50 (a standby entry costs 2, a winner about 23): several calls
    assert 8 <= sweep["calls"] <= 100
    assert {t["name"].split(",")[0] for t in report["targets"]} == {
        "closesAt -> every winner's hold given (draw done)",
        "closesAt -> /fairness shows the seed",
        "longest draw_run.lua call",
        "longest draw_standby.lua call",
        "longest draw_settle.lua call",
    }
    assert all(t["passed"] is not None for t in report["targets"])


@pytest.mark.slow
def test_access_bench_compares_each_path_with_its_baseline(
    stores: StoreUrls, tmp_path: Path
) -> None:
    code = access_bench.main(
        [
            *("--database-url", stores.database_url, "--redis-url", stores.redis_url),
            *("--flush-redis", "--users", "1000", "--rounds", "2", "--duration", "0.4"),
            *("--concurrency", "4", "--warmup", "0", "--pause", "0", "--gen-procs", "0"),
            *("--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0
    (path,) = tmp_path.glob("access-*.json")
    report = json.loads(path.read_text())
    assert report["problems"] == []
    by_name: dict[str, list[dict[str, object]]] = {}
    for phase in report["phases"]:
        by_name.setdefault(phase["name"], []).append(phase)
    wanted = {
        access_bench.JOIN: "201",
        access_bench.RESERVE: "201",
        access_bench.TICKET: "200",
        access_bench.DROP: "200",
        access_bench.FLOOR: "200",
    }
    assert set(by_name) == set(wanted)
    for name, outcome in wanted.items():
        assert len(by_name[name]) == 2, name  # one per round
        for phase in by_name[name]:
            assert phase["outcomes"] == {outcome: phase["requests"]}, name
            assert int(str(phase["requests"])) > 0
    for name in (access_bench.JOIN, access_bench.RESERVE):  # distinct shoppers, first joins
        assert all(int(str(p["requests"])) <= 1000 for p in by_name[name])
    targets = report["targets"]
    assert len(targets) == 2
    assert all(t["passed"] is not None for t in targets)


@pytest.mark.slow
def test_queue_storm_joins_before_the_start_and_polls(stores: StoreUrls, tmp_path: Path) -> None:
    code = queue_storm.main(
        [
            *("--database-url", stores.database_url, "--redis-url", stores.redis_url),
            *("--flush-redis", "--scale", "0.0006", "--join-window", "3"),
            *("--poll-seconds", "1", "--after-start", "2", "--workers", "1"),
            *("--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0
    (path,) = tmp_path.glob("queue-storm-*.json")
    report = json.loads(path.read_text())
    assert report["problems"] == []
    assert report["shoppers"] == 60
    join, poll = report["phases"]
    assert join["outcomes"] == {"201": 60}
    assert poll["outcomes"] == {"200": poll["requests"]}
    assert poll["requests"] >= 60  # each shopper polls at least twice: 2 s after 3 s of joins
    around = report["polls_around_start"]
    assert around["before"]["polls"] + around["after"]["polls"] == poll["requests"]
    assert around["after"]["polls"] > 0
    assert report["fairness"]["entries"] <= 60
    assert report["fairness"]["orderFixedAt"] is not None
    assert report["queue_after"]["admitted"] >= 0
