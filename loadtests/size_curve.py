"""The sizes load tests sell: a men's sneaker size run and how shoppers pick from it.

Shared by the storm's `sizes` scenario (loadtests/scenarios.py), the Locust shoppers
(loadtests/locustfile.py) and the Locust fixtures (loadtests/fixtures.py `--sized`).
Standard library only, so Locust's gevent processes import it as cheaply as the others.

A shopper wants one size, drawn from `SIZE_CURVE` (most of them US 8-11), and takes a
neighbouring size if theirs is gone: half a size up, half down, a size up, ... up to
`MAX_FALLBACKS` of them, asked in the same reserve (`fallbackSizes`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence

# US 4 to 13.5 in half sizes, with the share of shoppers (and of the stock) each size
# gets: most of it in US 8-11 (68 %), thin at both ends.
SIZE_CURVE: dict[str, float] = {
    "US 4": 0.3,
    "US 4.5": 0.3,
    "US 5": 0.5,
    "US 5.5": 0.6,
    "US 6": 1.0,
    "US 6.5": 1.3,
    "US 7": 2.5,
    "US 7.5": 3.5,
    "US 8": 6.5,
    "US 8.5": 8.0,
    "US 9": 10.5,
    "US 9.5": 11.0,
    "US 10": 12.0,
    "US 10.5": 10.5,
    "US 11": 9.5,
    "US 11.5": 6.5,
    "US 12": 6.0,
    "US 12.5": 3.0,
    "US 13": 3.5,
    "US 13.5": 3.0,
}
SIZE_RUN = list(SIZE_CURVE)
CORE_SIZES = SIZE_RUN[SIZE_RUN.index("US 8") : SIZE_RUN.index("US 11") + 1]
MAX_FALLBACKS = 5  # the contract's most
SIZE_SEED = 20  # a run's picks are the same every time


def size_run_stock(total: int, curve: Mapping[str, float] = SIZE_CURVE) -> list[tuple[str, int]]:
    """`total` units spread over the sizes along `curve` (the largest remainders get the
    units rounding leaves over), in the curve's order."""
    weight = sum(curve.values())
    exact = {label: total * share / weight for label, share in curve.items()}
    units = {label: math.floor(value) for label, value in exact.items()}
    by_remainder = sorted(curve, key=lambda label: units[label] - exact[label])
    for label in by_remainder[: total - sum(units.values())]:
        units[label] += 1
    return [(label, units[label]) for label in curve]


def neighbours(size: str, run: Sequence[str] = SIZE_RUN) -> list[str]:
    """The other sizes of `run` a shopper would also take, nearest first: the next one up,
    the next one down, two up, two down, ..."""
    at = run.index(size)
    order = [at + step for distance in range(1, len(run)) for step in (distance, -distance)]
    return [run[i] for i in order if 0 <= i < len(run)]


def size_request(
    rng: random.Random,
    fallbacks: int,
    curve: Mapping[str, float] = SIZE_CURVE,
) -> tuple[str, list[str]]:
    """A shopper's size drawn from `curve` and up to `fallbacks` neighbouring ones."""
    run = list(curve)
    (size,) = rng.choices(run, weights=list(curve.values()))
    return size, neighbours(size, run)[: min(fallbacks, MAX_FALLBACKS)]


def curve_for(labels: Sequence[str]) -> dict[str, float]:
    """The curve over a drop's own labels: SIZE_CURVE's share where the label is one of
    its sizes, else an even share (a drop sold in other sizes)."""
    if labels and all(label in SIZE_CURVE for label in labels):
        return {label: SIZE_CURVE[label] for label in labels}
    return dict.fromkeys(labels, 1.0)


def reserve_body(size: str, fallbacks: Sequence[str] = ()) -> bytes:
    """The reserve body asking for `size`, then `fallbacks` in order."""
    return json.dumps(
        {"size": size, "fallbackSizes": list(fallbacks)}, separators=(",", ":")
    ).encode()
