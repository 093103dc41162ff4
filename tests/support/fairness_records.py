"""Fairness records for the verify-order tests: a genuine one, and each kind of tampering.

A genuine record is built with app/fairness.py as the server publishes it. Each
tampering returns a changed copy that is made as consistent as it can be otherwise
(positions renumbered, the count adjusted), so that exactly one check has to catch it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from app import fairness

Record = dict[str, Any]


def genuine(drop_id: str = "drop-1", size: int = 20, seed: bytes | None = None) -> Record:
    """`{"fairness": ..., "entries": [...]}` as GET /fairness and /fairness/entries answer."""
    seed = seed if seed is not None else fairness.new_seed()
    ids = [fairness.new_entry_id() for _ in range(size)]
    return {
        "fairness": {
            "dropId": drop_id,
            "access": "draw",
            "algorithm": fairness.ALGORITHM,
            "seedCommitment": fairness.commitment(seed),
            "seed": seed.hex(),
            "entries": size,
            "orderFixedAt": "2026-12-07T03:00:00Z",
        },
        "entries": _listed(fairness.order(seed, ids)),
    }


def _listed(ordered: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"entryId": entry_id, "rankKey": key, "position": position}
        for position, (entry_id, key) in enumerate(ordered, 1)
    ]


def _renumbered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for position, entry in enumerate(entries, 1):
        entry["position"] = position
    return entries


def swapped_positions(record: Record) -> Record:
    """Two entries trade their position numbers; the list keeps its order."""
    changed = copy.deepcopy(record)
    first, second = changed["entries"][2], changed["entries"][7]
    first["position"], second["position"] = second["position"], first["position"]
    return changed


def swapped_places(record: Record) -> Record:
    """Two entries trade places in the list, positions still 1..n: a favoured entry moved up."""
    changed = copy.deepcopy(record)
    entries = changed["entries"]
    entries[0], entries[9] = entries[9], entries[0]
    _renumbered(entries)
    return changed


def changed_rank_key(record: Record) -> Record:
    """One entry's rank key replaced by another that still sorts in its place."""
    changed = copy.deepcopy(record)
    entry = changed["entries"][4]
    key = entry["rankKey"]
    entry["rankKey"] = key[:-1] + ("0" if key[-1] != "0" else "1")
    return changed


def other_seed(record: Record) -> Record:
    """A consistent order under a seed other than the committed one."""
    changed = copy.deepcopy(record)
    seed = fairness.new_seed()
    ids = [entry["entryId"] for entry in changed["entries"]]
    changed["fairness"]["seed"] = seed.hex()
    changed["entries"] = _listed(fairness.order(seed, ids))
    return changed


def added_entry(record: Record) -> Record:
    """An entry of the operator's own at the front, with a made-up rank key, counted."""
    changed = copy.deepcopy(record)
    made_up = {"entryId": "0123456789abcdef", "rankKey": "0" * 64, "position": 1}
    changed["entries"] = _renumbered([made_up, *changed["entries"]])
    changed["fairness"]["entries"] += 1
    return changed


def removed_entry(record: Record) -> Record:
    """An entry left out of the list (positions closed up); the count still includes it."""
    changed = copy.deepcopy(record)
    del changed["entries"][3]
    _renumbered(changed["entries"])
    return changed


def duplicated_entry(record: Record) -> Record:
    """An entry listed twice in a row (a second chance), counted and numbered."""
    changed = copy.deepcopy(record)
    entries = changed["entries"]
    entries.insert(6, dict(entries[5]))
    _renumbered(entries)
    changed["fairness"]["entries"] += 1
    return changed


# name -> (tampering, a phrase the problem it must raise contains)
TAMPERINGS: dict[str, tuple[Callable[[Record], Record], str]] = {
    "swapped positions": (swapped_positions, "position is"),
    "swapped places": (swapped_places, "out of order"),
    "changed rank key": (changed_rank_key, "the seed gives"),
    "other seed": (other_seed, "does not match its commitment"),
    "added entry": (added_entry, "the seed gives"),
    "removed entry": (removed_entry, "entries, the list has"),
    "duplicated entry": (duplicated_entry, "appears twice"),
}
