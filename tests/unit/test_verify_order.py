"""verify_order.problems(): a genuine record verifies, every kind of tampering is caught.

Each tampering (tests/support/fairness_records.py) is made consistent in every other
respect, so each test shows that one check is needed and works.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from app import fairness
from app.verify_order import problems, run
from tests.support import fairness_records
from tests.support.fairness_records import TAMPERINGS, Record


def _problems(record: Record, drop_id: str | None = None) -> list[str]:
    return problems(record["fairness"], record["entries"], drop_id)


def test_a_genuine_record_verifies() -> None:
    record = fairness_records.genuine(size=200)
    assert _problems(record, "drop-1") == []


def test_an_empty_record_verifies() -> None:
    assert _problems(fairness_records.genuine(size=0)) == []


def test_a_record_from_a_known_seed_verifies() -> None:
    """Independent of app.fairness: keys computed with openssl (tests/unit/test_fairness.py)."""
    record: Record = {
        "fairness": {
            "dropId": "d",
            "algorithm": "hmac-sha256-v1",
            "seedCommitment": "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd",
            "seed": bytes(range(32)).hex(),
            "entries": 2,
        },
        "entries": [
            {
                "entryId": "a1b2c3d4e5f60718",
                "rankKey": "225bd96ae7e1f58d583e8f1fe6e60c50a5eec45cfb3d6ed9437062fa16f6cee1",
                "position": 1,
            },
            {
                "entryId": "0000000000000000",
                "rankKey": "7b65425ef61bd49af2ef216722a757ed5bc6f6ae70934d959143d551e1bced36",
                "position": 2,
            },
        ],
    }
    assert _problems(record) == []


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_each_tampering_is_caught(name: str) -> None:
    tamper, phrase = TAMPERINGS[name]
    found = _problems(tamper(fairness_records.genuine()), "drop-1")
    assert found, f"{name} verified"
    assert any(phrase in problem for problem in found), found


def test_a_consistent_record_under_another_seed_fails_on_the_commitment_alone() -> None:
    found = _problems(fairness_records.other_seed(fairness_records.genuine()))
    assert len(found) == 1
    assert "does not match its commitment" in found[0]


def test_a_removed_entry_fails_on_the_count_alone() -> None:
    found = _problems(fairness_records.removed_entry(fairness_records.genuine(size=20)))
    assert found == ["the record counts 20 entries, the list has 19"]


def test_a_duplicate_fails_on_the_duplicate_alone() -> None:
    found = _problems(fairness_records.duplicated_entry(fairness_records.genuine()))
    assert len(found) == 1
    assert "appears twice, first as entry #6" in found[0]


def test_a_made_up_rank_key_names_the_added_entry() -> None:
    found = _problems(fairness_records.added_entry(fairness_records.genuine()))
    assert len(found) == 1
    assert found[0].startswith("entry #1 (0123456789abcdef): rankKey is '000")


def test_swapped_places_fail_on_the_order_alone() -> None:
    found = _problems(fairness_records.swapped_places(fairness_records.genuine()))
    assert found
    assert all("out of order" in problem for problem in found), found


def test_swapped_positions_name_both_entries() -> None:
    found = _problems(fairness_records.swapped_positions(fairness_records.genuine()))
    assert len(found) == 2
    assert "entry #3" in found[0]
    assert "position is 8, expected 3" in found[0]
    assert "entry #8" in found[1]
    assert "position is 3, expected 8" in found[1]


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"algorithm": "hmac-sha512"}, "algorithm is 'hmac-sha512'"),
        ({"algorithm": None}, "algorithm is None"),
        ({"seed": None}, "the seed is not revealed"),
        ({"seed": "ab" * 31}, "is not 64 lowercase hex digits"),
        ({"seed": "AB" * 32}, "is not 64 lowercase hex digits"),
        ({"seedCommitment": "AB" * 32}, "seedCommitment 'ABAB"),
        ({"entries": "20"}, "the record counts '20' entries"),
        ({"entries": True}, "the record counts True entries"),
        ({"entries": 21}, "the record counts 21 entries, the list has 20"),
        ({"dropId": "drop-2"}, "the record is of drop 'drop-2', not 'drop-1'"),
    ],
)
def test_a_malformed_fairness_object_is_reported(change: dict[str, Any], phrase: str) -> None:
    record = fairness_records.genuine(size=20)
    record["fairness"].update(change)
    found = _problems(record, "drop-1")
    assert any(phrase in problem for problem in found), found


def test_an_uppercase_seed_is_refused_even_though_its_bytes_match() -> None:
    record = fairness_records.genuine()
    record["fairness"]["seed"] = record["fairness"]["seed"].upper()
    assert _problems(record)


@pytest.mark.parametrize(
    ("entry", "phrase"),
    [
        ("not an object", "entry #1 is not a JSON object"),
        ({"rankKey": "0" * 64, "position": 1}, "entryId None is not a non-empty string"),
        ({"entryId": "", "rankKey": "0" * 64, "position": 1}, "entryId '' is not"),
        ({"entryId": "x", "rankKey": None, "position": 1}, "rankKey None is not a string"),
        ({"entryId": "x", "rankKey": "0" * 64, "position": "1"}, "position is '1', expected 1"),
        ({"entryId": "x", "rankKey": "0" * 64, "position": True}, "position is True, expected 1"),
    ],
)
def test_a_malformed_entry_is_reported(entry: Any, phrase: str) -> None:
    record = fairness_records.genuine(size=3)
    record["entries"][0] = entry
    found = _problems(record)
    assert any(phrase in problem for problem in found), found


def test_a_record_that_is_not_an_object_or_list_is_reported() -> None:
    assert problems([], []) == ["the fairness record is not a JSON object"]
    record = fairness_records.genuine(size=0)
    assert problems(record["fairness"], {}) == ["the entries are not a JSON list"]
    assert problems(record["fairness"], "[]") == ["the entries are not a JSON list"]


def test_rank_keys_are_checked_against_the_seed_not_against_each_other() -> None:
    """A list sorted by keys from another seed is in order by its own keys, and still fails."""
    seed = fairness.new_seed()
    record = fairness_records.genuine(seed=seed)
    forged = fairness_records.other_seed(record)
    forged["fairness"]["seed"] = seed.hex()  # the committed seed again
    found = _problems(forged)
    assert len(found) >= len(record["entries"])
    assert all("the seed gives" in problem or "out of order" in problem for problem in found)


def _run_file(path: Path, drop_id: str = "drop-1") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(drop_id, file=path, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_run_prints_the_drop_the_count_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(fairness_records.genuine(size=12)))
    code, out, err = _run_file(path)
    assert (code, err) == (0, "")
    assert out == "drop drop-1: 12 entries, hmac-sha256-v1: order verified\n"


def test_run_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text(json.dumps(fairness_records.swapped_positions(fairness_records.genuine())))
    code, out, _ = _run_file(path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "drop drop-1: 20 entries, 2 problem(s):"
    assert lines[1].startswith("  - entry #3")
    assert lines[2].startswith("  - entry #8")
    assert lines[-1] == "drop drop-1: order NOT verified"


def test_run_shows_the_first_problems_of_a_long_list(tmp_path: Path) -> None:
    record = fairness_records.genuine(size=300)
    record["fairness"]["seed"] = fairness.new_seed().hex()  # every rank key now disagrees
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    code, out, _ = _run_file(path)
    assert code == 1
    assert out.count("\n  - ") <= 50
    assert "  ... and " in out
    assert out.rstrip().endswith("order NOT verified")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (None, "cannot read"),
        ("{not json", "is not valid JSON"),
        ("[]", "is not a saved record"),
        ('{"fairness": {}}', "is not a saved record"),
    ],
)
def test_run_on_an_unreadable_file_exits_2(
    tmp_path: Path, content: str | None, phrase: str
) -> None:
    path = tmp_path / "record.json"
    if content is not None:
        path.write_text(content)
    code, out, err = _run_file(path)
    assert (code, out) == (2, "")
    assert err.startswith("sneakerdrop verify-order: ")
    assert phrase in err
