"""Splitting a long list into the batches one round trip or one query carries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most `size`, in order."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
