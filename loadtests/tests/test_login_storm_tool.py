"""The login storm runs end to end at a tiny size: every phase, the logins, the figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from loadtests import login_storm


class StoreUrls(Protocol):
    """tests/support/stores.py's, not imported: mypy checks loadtests/ without tests/."""

    database_url: str
    redis_url: str


def test_login_storm_runs_end_to_end(stores: StoreUrls, tmp_path: Path) -> None:
    code = login_storm.main(
        [
            *("--database-url", stores.database_url, "--redis-url", stores.redis_url),
            *("--workers", "1", "--users", "20", "--login-users", "4", "--bcrypt-rounds", "4"),
            *("--concurrency", "4", "--duration", "0.6", "--fixed-duration", "0.6"),
            *("--login-concurrency", "2", "--login-duration", "0.6", "--rounds", "1"),
            *("--warmup", "0.1", "--pause", "0", "--gen-procs", "0"),
            *("--out-dir", str(tmp_path)),
        ]
    )

    assert code == 0
    (path,) = tmp_path.glob("login-storm-*.json")
    report = json.loads(path.read_text())
    phases = {p["name"]: p for p in report["phases"]}
    assert set(phases) == {
        "reserve peak",
        login_storm.QUIET,
        login_storm.LOGINS,
        "logins beside reserve",
        "logins alone",
    }
    for name in ("reserve peak", login_storm.QUIET, login_storm.LOGINS):
        assert phases[name]["outcomes"] == {"201": phases[name]["requests"]}  # every reserve held
        assert phases[name]["latency"]["p99"] > 0
    assert phases[login_storm.QUIET]["rate"] == phases[login_storm.LOGINS]["rate"] > 0
    for name in ("logins beside reserve", "logins alone"):  # the right password, every time
        assert phases[name]["outcomes"] == {"200": phases[name]["requests"]} != {"200": 0}
    beside = phases[login_storm.LOGINS]["notes"]
    assert not [note for note in beside if "did not cover" in note], beside
    (found,) = report["targets"]
    assert found["passed"] is not None
    assert report["logins_per_core"] > 0
    assert len(report["machine"]["load_average"]) == len(report["load_average_at_end"]) == 3
