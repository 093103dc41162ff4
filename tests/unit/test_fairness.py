"""The published ordering rule (app/fairness.py) against values computed without it.

The fixed digests below were computed with `openssl dgst -sha256 [-mac HMAC]`, not
with Python, and RFC 4231 gives the HMAC test vector: a client in any language that
reproduces these reproduces the order.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from app import fairness

SEED = bytes(range(32))  # 00 01 02 ... 1f
SEED_COMMITMENT = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
RANK_KEYS = {  # openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
    "a1b2c3d4e5f60718": "225bd96ae7e1f58d583e8f1fe6e60c50a5eec45cfb3d6ed9437062fa16f6cee1",
    "é": "2445a1fe5ea6e3a6a788fcd7694ae2e660a1b57669bd103992c9cea6979eedcd",
    "entry-2": "528762995a4afecfb89790752cf9e7c228463bc6467d42b67c83f44d167fc600",
    "0000000000000000": "7b65425ef61bd49af2ef216722a757ed5bc6f6ae70934d959143d551e1bced36",
}


def test_the_algorithm_is_named_as_the_contract_says() -> None:
    assert fairness.ALGORITHM == "hmac-sha256-v1"


def test_the_commitment_is_sha256_of_the_raw_seed_bytes() -> None:
    assert fairness.commitment(SEED) == SEED_COMMITMENT
    # Not the SHA-256 of the seed's hex: the contract says raw bytes.
    assert fairness.commitment(SEED) != hashlib.sha256(SEED.hex().encode()).hexdigest()


def test_rank_keys_match_openssl() -> None:
    for entry_id, expected in RANK_KEYS.items():
        assert fairness.rank_key(SEED, entry_id) == expected


def test_the_entry_id_is_hashed_as_utf8() -> None:
    assert fairness.rank_key(SEED, "é") == hmac.new(SEED, b"\xc3\xa9", hashlib.sha256).hexdigest()


def test_rank_key_matches_rfc_4231_test_case_2() -> None:
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert fairness.rank_key(b"Jefe", "what do ya want for nothing?") == expected


def test_the_order_ascends_by_rank_key_whatever_the_input_order() -> None:
    expected = [
        ("a1b2c3d4e5f60718", RANK_KEYS["a1b2c3d4e5f60718"]),
        ("é", RANK_KEYS["é"]),
        ("entry-2", RANK_KEYS["entry-2"]),
        ("0000000000000000", RANK_KEYS["0000000000000000"]),
    ]
    assert fairness.order(SEED, RANK_KEYS) == expected
    assert fairness.order(SEED, reversed(list(RANK_KEYS))) == expected
    assert fairness.order(SEED, []) == []


def test_the_order_equals_sorting_by_hmac_computed_directly() -> None:
    seed = fairness.new_seed()
    ids = [fairness.new_entry_id() for _ in range(500)]
    direct = sorted(ids, key=lambda i: hmac.new(seed, i.encode(), hashlib.sha256).digest())
    assert [entry_id for entry_id, _ in fairness.order(seed, ids)] == direct


def test_another_seed_gives_another_order() -> None:
    ids = [f"entry-{n}" for n in range(50)]
    first = fairness.order(bytes(32), ids)
    second = fairness.order(bytes(31) + b"\x01", ids)
    assert [e for e, _ in first] != [e for e, _ in second]


def test_seeds_and_entry_ids_are_random_and_well_formed() -> None:
    seeds = {fairness.new_seed() for _ in range(100)}
    assert len(seeds) == 100
    assert all(len(seed) == fairness.SEED_BYTES == 32 for seed in seeds)
    ids = {fairness.new_entry_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}", entry_id) for entry_id in ids)
