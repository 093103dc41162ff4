"""The published ordering rule of queue and draw drops ("hmac-sha256-v1").

Each queue or draw drop gets a secret 32-byte seed at creation; its SHA-256 (the
commitment) is public from then on. When the order is fixed the seed is revealed, and
anyone can recompute every entry's rank key, HMAC-SHA256(seed, entryId), and sort the
entries by it (docs/FAIRNESS.md). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

ALGORITHM = "hmac-sha256-v1"
SEED_BYTES = 32


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def new_entry_id() -> str:
    """An entry's opaque random id (16 hex digits): not derived from the user."""
    return secrets.token_hex(8)


def commitment(seed: bytes) -> str:
    """The lowercase hex SHA-256 of the seed's raw bytes: published before the reveal."""
    return hashlib.sha256(seed).hexdigest()


def rank_key(seed: bytes, entry_id: str) -> str:
    """The lowercase hex HMAC-SHA256 of the entry id (UTF-8) under the seed."""
    return hmac.new(seed, entry_id.encode(), hashlib.sha256).hexdigest()


def order(seed: bytes, entry_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(entryId, rankKey) sorted ascending by rank key: position 1 first."""
    ranked = [(entry_id, rank_key(seed, entry_id)) for entry_id in entry_ids]
    ranked.sort(key=lambda pair: pair[1])
    return ranked
