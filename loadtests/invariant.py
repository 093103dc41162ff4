"""The end-of-run check of a storm: nothing oversold, every drop's books balance.

Two independent checks, both required:
- the app's own `Reconciler.check()`: for every drop, Redis against PostgreSQL,
  `available + live holds + purchases == total`, `available >= 0`, and Redis's sold
  count equal to PostgreSQL's purchases;
- what the load generator saw: no drop answered more reserves with 201 than it had
  units. (A released unit taken again would count twice; storm.py releases units only
  by its cancels, which come after the last reserve of their drop.)
"""

from __future__ import annotations

from collections import Counter

from app.background.reconciler import Reconciler
from app.config import Settings
from app.container import build_container
from app.services.invariant import DropCheck


async def drop_checks(database_url: str, redis_url: str) -> list[DropCheck]:
    """The app's own check of every drop (Redis against PostgreSQL), as it finds them."""
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=redis_url,
        jwt_access_secret="x" * 32,  # unused: the check signs nothing
        jwt_refresh_secret="y" * 32,
    )
    container = await build_container(settings)
    try:
        checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    finally:
        await container.close()
    return checks


def check_problem(c: DropCheck) -> str | None:
    if c.total is not None and c.healthy:
        return None
    return (
        f"INVARIANT VIOLATED drop {c.drop_id} ({c.name}): total {c.total_pg}, "
        f"available {c.available}, live holds {c.live_holds}, sold {c.sold_pg} "
        f"(Redis: total {c.total}, sold {c.sold})"
    )


async def invariant_problems(
    database_url: str, redis_url: str, stock: dict[str, int], granted: Counter[str]
) -> tuple[int, list[str]]:
    """(drops checked, problems) for the drops in `stock` (drop id -> units)."""
    checks = await drop_checks(database_url, redis_url)
    problems = []
    for c in checks:
        if c.drop_id not in stock:
            continue  # --target: drops that were there before the run
        if (problem := check_problem(c)) is not None:
            problems.append(problem)
    for drop_id, count in sorted(granted.items()):
        if count > stock.get(drop_id, count):
            problems.append(
                f"OVERSOLD drop {drop_id}: {count} holds granted, {stock[drop_id]} units"
            )
    return sum(1 for c in checks if c.drop_id in stock), problems
