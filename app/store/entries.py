"""A hold's entry in its drop's `holds` hash, parsed: `STATE|user|expires|created|extra`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HoldEntry:
    state: str
    user_id: str
    expires_at_ms: int
    created_at_ms: int
    extra: str  # claim id while PURCHASING, closed time (ms) once ended


def parse_entry(raw: str) -> HoldEntry:
    state, user_id, expires, created, extra = raw.split("|", 4)
    return HoldEntry(state, user_id, int(expires), int(created), extra)
