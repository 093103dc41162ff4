"""Check a drop's fairness record: recompute its order from the revealed seed.

`sneakerdrop verify-order DROP_ID` reads the record from a running server
(`GET /api/drops/{id}/fairness` and `/fairness/entries`) or from a saved copy, and
`problems()` lists every way it departs from the published rule (app/fairness.py,
docs/FAIRNESS.md). It needs nothing but the record: no settings, no stores, no
account, so anyone can run it against any server.

Exit codes of `run()`: 0 verified, 1 the record does not verify, 2 the record could
not be read (usage, no answer, 404 / 409, malformed JSON).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from app.fairness import ALGORITHM, rank_key

DEFAULT_URL = "http://127.0.0.1:4000"  # `sneakerdrop serve`'s default HOST and PORT
TIMEOUT_SECONDS = 30.0  # per socket operation; a 100,000-entry list is about 12 MB
SHOWN_PROBLEMS = 50  # a shifted list of 100,000 entries would otherwise print them all
HEX64 = re.compile(r"[0-9a-f]{64}")

VERIFIED, NOT_VERIFIED, UNREADABLE = 0, 1, 2


class FetchError(Exception):
    """The record could not be read; the message says why in a sentence."""


@dataclass(frozen=True)
class Record:
    """A drop's fairness record: the `/fairness` object and the `/fairness/entries` list."""

    fairness: Any
    entries: Any

    def to_json(self) -> dict[str, Any]:
        return {"fairness": self.fairness, "entries": self.entries}


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def problems(fairness: Any, entries: Any, drop_id: str | None = None) -> list[str]:
    """Every departure of the record from the rule; an empty list means it verifies.

    Together the checks pin the order down: every rank key is the HMAC of its entry id
    under the committed seed, the list ascends by rank key and positions run 1..n.
    """
    if not isinstance(fairness, Mapping):
        return ["the fairness record is not a JSON object"]
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        return ["the entries are not a JSON list"]
    found: list[str] = []
    if drop_id is not None and fairness.get("dropId") != drop_id:
        found.append(f"the record is of drop {fairness.get('dropId')!r}, not {drop_id!r}")
    if fairness.get("algorithm") != ALGORITHM:
        found.append(f"algorithm is {fairness.get('algorithm')!r}, not {ALGORITHM!r}")
    seed = _seed(fairness, found)
    count = fairness.get("entries")
    if not _is_int(count) or count != len(entries):
        found.append(f"the record counts {count!r} entries, the list has {len(entries)}")
    found.extend(_entry_problems(entries, seed))
    return found


def _seed(fairness: Mapping[str, Any], found: list[str]) -> bytes | None:
    """The revealed seed's bytes when it is well formed (problems noted in `found`)."""
    seed_hex, commitment = fairness.get("seed"), fairness.get("seedCommitment")
    if not _is_hex64(commitment):
        found.append(f"seedCommitment {commitment!r} is not 64 lowercase hex digits")
    if seed_hex is None:
        found.append("the seed is not revealed: the order is not fixed yet")
        return None
    if not _is_hex64(seed_hex):
        found.append(f"seed {seed_hex!r} is not 64 lowercase hex digits")
        return None
    seed = bytes.fromhex(seed_hex)
    actual = hashlib.sha256(seed).hexdigest()
    if actual != commitment:
        found.append(
            f"the seed does not match its commitment: SHA-256 of the seed is {actual}, "
            f"seedCommitment is {commitment}"
        )
    return seed


def _entry_problems(entries: Sequence[Any], seed: bytes | None) -> list[str]:
    found: list[str] = []
    seen: dict[str, int] = {}
    previous: tuple[int, str] | None = None  # (index, rankKey) of the last well-formed entry
    for index, entry in enumerate(entries):
        expected_position = index + 1
        where = f"entry #{expected_position}"
        if not isinstance(entry, Mapping):
            found.append(f"{where} is not a JSON object")
            previous = None
            continue
        entry_id, key, position = entry.get("entryId"), entry.get("rankKey"), entry.get("position")
        if not isinstance(entry_id, str) or not entry_id:
            found.append(f"{where}: entryId {entry_id!r} is not a non-empty string")
        else:
            where = f"entry #{expected_position} ({entry_id})"
            if entry_id in seen:
                found.append(f"{where} appears twice, first as entry #{seen[entry_id]}")
            else:
                seen[entry_id] = expected_position
            if seed is not None:
                expected_key = rank_key(seed, entry_id)
                if key != expected_key:
                    found.append(f"{where}: rankKey is {key!r}, the seed gives {expected_key}")
        if not _is_int(position) or position != expected_position:
            found.append(f"{where}: position is {position!r}, expected {expected_position}")
        if not isinstance(key, str):
            found.append(f"{where}: rankKey {key!r} is not a string")
            previous = None
            continue
        if previous is not None and key < previous[1]:
            found.append(
                f"{where} is out of order: its rankKey {key} sorts before entry "
                f"#{previous[0] + 1}'s {previous[1]}"
            )
        previous = (index, key)
    return found


def fetch(url: str, drop_id: str, timeout: float = TIMEOUT_SECONDS) -> Record:
    """The record from a running server; FetchError on any failure to get it."""
    base = f"{url.rstrip('/')}/api/drops/{urllib.parse.quote(drop_id, safe='')}/fairness"
    fairness = _get_json(base, drop_id, timeout)
    if isinstance(fairness, Mapping) and "seed" in fairness and fairness["seed"] is None:
        raise FetchError(
            f"the order of drop {drop_id} is not fixed yet: the seed is revealed when the "
            f"order is fixed (a queue's startsAt, a draw's closesAt); seedCommitment is "
            f"{fairness.get('seedCommitment')}, keep it to check the seed against later"
        )
    return Record(fairness, _get_json(f"{base}/entries", drop_id, timeout))


def _get_json(address: str, drop_id: str, timeout: float) -> Any:
    request = urllib.request.Request(address, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise FetchError(_http_failure(address, drop_id, exc)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # Refused, unknown host, timed out, or cut off mid-answer.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise FetchError(f"no answer from {address}: {reason or type(exc).__name__}") from None
    except ValueError as exc:  # not an http(s) URL
        raise FetchError(f"cannot fetch {address}: {exc}") from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{address} did not answer JSON: {exc}") from None


def _http_failure(address: str, drop_id: str, exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read())
        code = problem.get("code") if isinstance(problem, dict) else None
    except (ValueError, OSError):
        code = None
    label = f"{exc.code} {code}" if code else str(exc.code)
    if exc.code == 404:
        return (
            f"drop {drop_id} has no fairness record at {address} ({label}): "
            "no such drop, or an open drop (only queue and draw drops have one)"
        )
    if exc.code == 409:
        return (
            f"the order of drop {drop_id} is not fixed yet ({label}): it is fixed at a "
            "queue's startsAt or a draw's closesAt"
        )
    return f"{address} answered {label}"


def load(path: Path) -> Record:
    """A saved copy: a JSON file `{"fairness": {...}, "entries": [...]}`."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FetchError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not {"fairness", "entries"} <= data.keys():
        raise FetchError(
            f'{path} is not a saved record: expected {{"fairness": ..., "entries": ...}}'
        )
    return Record(data["fairness"], data["entries"])


def save(record: Record, path: Path) -> None:
    try:
        path.write_text(json.dumps(record.to_json(), indent=1) + "\n")
    except OSError as exc:
        raise FetchError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(
    drop_id: str,
    *,
    url: str | None = None,
    file: Path | None = None,
    save_to: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Read the record, save it if asked (before judging: a copy is evidence either way),
    verify it and print the outcome."""
    try:
        if file is not None:
            record = load(file)
        else:
            record = fetch(url or DEFAULT_URL, drop_id)
            if save_to is not None:
                save(record, save_to)
    except FetchError as exc:
        print(f"sneakerdrop verify-order: {exc}", file=err)
        return UNREADABLE
    found = problems(record.fairness, record.entries, drop_id)
    count = len(record.entries) if isinstance(record.entries, list) else "?"
    if not found:
        print(f"drop {drop_id}: {count} entries, {ALGORITHM}: order verified", file=out)
        return VERIFIED
    print(f"drop {drop_id}: {count} entries, {len(found)} problem(s):", file=out)
    for problem in found[:SHOWN_PROBLEMS]:
        print(f"  - {problem}", file=out)
    if len(found) > SHOWN_PROBLEMS:
        print(f"  ... and {len(found) - SHOWN_PROBLEMS} more", file=out)
    print(f"drop {drop_id}: order NOT verified", file=out)
    return NOT_VERIFIED
