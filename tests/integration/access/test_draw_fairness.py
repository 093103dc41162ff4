"""Over many draws every entrant wins as often as chance says, whenever they entered.

200 draw drops of 10 units; in each, the same 100 entrants enter in the same order
(entrant 0 always first). Entries go through the service and the draw through
draw_run.lua on real Redis (half of the draws one entry a call, as when each call's
work budget runs out at once); the drop's closesAt is
moved to now in Redis once everyone has entered, so no draw waits for the clock. Each
entrant's win count over the 200 draws must pass a chi-square test of uniformity at
p > 0.01, the p-value computed with the regularized upper incomplete gamma function.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from app.container import Container
from app.store.keys import DropKeys
from tests.support.access import bulk_users, chi_square_sf, draw_drop
from tests.support.factories import admin_token

DRAWS = 200
ENTRANTS = 100
UNITS = 10
CRITICAL_99_DOF_AT_1_PERCENT = 134.642  # the chi-square table's value


def test_the_chi_square_tail_matches_the_table() -> None:
    assert abs(chi_square_sf(CRITICAL_99_DOF_AT_1_PERCENT, 99) - 0.01) < 2e-5
    assert abs(chi_square_sf(3.841, 1) - 0.05) < 1e-4
    assert abs(chi_square_sf(99, 99) - 0.4811) < 1e-3
    assert chi_square_sf(0, 5) == 1.0


async def _one_draw(
    container: Container, drop_id: str, entrants: list[str], budget: int
) -> list[int]:
    """Enter everyone in order, close, draw; the winners' entrant numbers."""
    entry_of: dict[str, int] = {}
    for number, user in enumerate(entrants):
        entry, created = await container.access_service.enter(user, drop_id, [])
        assert created
        assert entry.status == "entered"
        entry_of[entry.entry_id] = number
    k = DropKeys(drop_id)
    seconds, micros = await container.redis.time()
    await container.redis.hset(k.drop, "closes", seconds * 1000 + micros // 1000)
    calls = 0
    while True:
        step = await container.access_store.draw(drop_id, budget)
        calls += 1
        if step.state == "DONE":
            break
        assert step.state == "DRAWING", step
    # A spent budget ends a call after the entry that spent it (draw_run.lua).
    assert calls == (ENTRANTS if budget <= 1 else 1)
    entries = await container.redis.hgetall(k.draw_entries)
    winners: list[tuple[int, int]] = []
    statuses: Counter[str] = Counter()
    for entry_id, value in entries.items():
        _, status, _, hold, position = str(value).split("|")
        statuses[status] += 1
        if status == "W":
            assert hold
            winners.append((int(position), entry_of[str(entry_id)]))
    assert statuses == {"W": UNITS, "S": ENTRANTS - UNITS}
    assert sorted(p for p, _ in winners) == list(range(1, UNITS + 1))  # the first in order win
    return [number for _, number in winners]


@pytest.mark.timeout(120)
async def test_every_entrant_wins_equally_often_over_200_draws(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    entrants = await bulk_users(container, ENTRANTS)
    wins: Counter[int] = Counter()
    drops = [await draw_drop(client, admin, closes_in=3600, totalStock=UNITS) for _ in range(DRAWS)]
    # The app's own leader would draw them too, at the moved closesAt: leave them to us.
    for drop in drops:
        await container.access_store.done_with(drop["id"])
    for batch in range(0, DRAWS, 20):
        results = await asyncio.gather(
            *(
                _one_draw(container, drop["id"], entrants, 1 if n % 2 else 1_000_000)
                for n, drop in enumerate(drops[batch : batch + 20])
            )
        )
        for winners in results:
            wins.update(winners)
    expected = DRAWS * UNITS / ENTRANTS
    statistic = sum((wins[n] - expected) ** 2 / expected for n in range(ENTRANTS))
    p_value = chi_square_sf(statistic, ENTRANTS - 1)
    print(
        f"draw fairness: chi-square {statistic:.2f} on {ENTRANTS - 1} dof, p = {p_value:.4f}; "
        f"wins per entrant {min(wins.values())}..{max(wins.values())} (expected {expected:.0f})"
    )
    assert sum(wins.values()) == DRAWS * UNITS
    assert p_value > 0.01, (statistic, sorted(wins.items()))
    # The first ten to enter are no luckier than the last ten.
    assert sum(wins[n] for n in range(10)) < 2 * sum(wins[n] for n in range(90, 100)) + 20
