"""Garbage-collector settings for a long-running server process.

A full collection stops the event loop for as long as it takes to walk every
tracked object, and after start-up most of them (modules, routes, schemas,
SQLAlchemy and pydantic internals) live for the life of the process. Freezing
them once the app is ready takes them out of every later collection, and a larger
young-generation threshold makes the cheap collections rarer, so the pauses that
set a latency tail become shorter and less frequent. Garbage still gets collected:
only objects alive at start-up are exempt.

Public APIs only (`gc.freeze`, `gc.set_threshold`): no start-up check.
Off switch: `GC_FREEZE=false` (neither the freeze nor the thresholds). docs/RUNTIME.md.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)
MIDDLE_THRESHOLD = 20  # young collections per middle one (default 10)
OLD_THRESHOLD = 100  # middle collections per full one, at most (default 10)


def freeze_startup_objects() -> None:
    """Collect once, then move everything alive into the permanent generation."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
