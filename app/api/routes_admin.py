"""Admin JSON routes behind the operator console (`/admin`): invariants and live figures.

Admins only (a customer gets 403 FORBIDDEN); read-only. The console changes drops
through the public admin routes (create, patch, restock) like any other client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from app.api import render
from app.api.deps import ContainerDep, CurrentAdmin
from app.api.responses import FORBIDDEN, UNAUTHORIZED, UNAVAILABLE, VALIDATION, errors
from app.api.schemas import Timestamp, WireModel
from app.container import Container
from app.domain import iso
from app.errors import ValidationFailed
from app.services.console import ConsoleService, Invariant, Stats
from app.store.tally import RETAIN_SECONDS, TallyStore

router = APIRouter(prefix="/api/admin", tags=["admin"])

NOT_FOUND = (404, "DROP_NOT_FOUND")
ADMIN_READ = (UNAUTHORIZED, FORBIDDEN, UNAVAILABLE)


class SizeInvariantOut(WireModel):
    size: str
    total_stock: int  # Redis
    available_stock: int
    live_holds: int
    sold: int
    total_stock_postgres: int | None  # None: PostgreSQL has no such size
    sold_postgres: int | None
    healthy: bool


class InvariantOut(WireModel):
    """`availableStock + liveHolds + sold == totalStock`, Redis against PostgreSQL."""

    drop_id: str
    name: str
    healthy: bool
    drift: int  # units off the invariant, counted against PostgreSQL's facts
    total_stock_postgres: int
    sold_postgres: int
    total_stock: int | None  # None: Redis does not have the drop (the reconciler rebuilds it)
    available_stock: int
    live_holds: int
    sold: int
    problems: list[str]
    sizes: list[SizeInvariantOut]
    checked_at: Timestamp


class SecondOut(WireModel):
    at: Timestamp  # the start of the second
    outcomes: dict[str, int]  # reserves answered with each code in that second


class SizeStatsOut(WireModel):
    size: str
    total_stock: int
    available_stock: int
    live_holds: int
    sold: int


class StatsOut(WireModel):
    drop_id: str
    seconds: list[SecondOut]  # oldest first, the newest complete second last
    total_stock: int
    available_stock: int
    live_holds: int
    sold: int
    sizes: list[SizeStatsOut]


async def only_seconds(request: Request) -> None:
    """Unknown query parameters are refused, as unknown body fields are: a misspelt
    `?second=5` would otherwise be answered silently with the default minute."""
    unknown = sorted(set(request.query_params) - {"seconds"})
    if unknown:
        raise ValidationFailed(f"Unknown query parameter: {', '.join(unknown) or '(empty)'}")


def _console(container: Container) -> ConsoleService:
    return ConsoleService(
        container.db,
        container.drop_store,
        container.drop_service,
        TallyStore(container.redis),
    )


@router.get("/invariant", response_model=list[InvariantOut], responses=errors(*ADMIN_READ))
async def all_invariants(_admin: CurrentAdmin, container: ContainerDep) -> Response:
    """Every drop's invariant, as `sneakerdrop check` prints it (sizes: see one drop's)."""
    found = await _console(container).invariants()
    return render.JSONBody([_invariant(i) for i in found])


@router.get(
    "/drops/{drop_id}/invariant",
    response_model=InvariantOut,
    responses=errors(*ADMIN_READ, NOT_FOUND, VALIDATION),
)
async def drop_invariant(drop_id: str, _admin: CurrentAdmin, container: ContainerDep) -> Response:
    return render.JSONBody(_invariant(await _console(container).invariant(drop_id)))


@router.get(
    "/drops/{drop_id}/stats",
    response_model=StatsOut,
    responses=errors(*ADMIN_READ, NOT_FOUND, VALIDATION),
    dependencies=[Depends(only_seconds)],
)
async def drop_stats(
    drop_id: str,
    _admin: CurrentAdmin,
    container: ContainerDep,
    seconds: Annotated[int, Query(ge=1, le=RETAIN_SECONDS)] = 60,
) -> Response:
    return render.JSONBody(_stats(await _console(container).stats(drop_id, seconds)))


def _invariant(found: Invariant) -> dict[str, object]:
    c = found.check
    return {
        "dropId": c.drop_id,
        "name": c.name,
        "healthy": c.healthy,
        "drift": c.drift,
        "totalStockPostgres": c.total_pg,
        "soldPostgres": c.sold_pg,
        "totalStock": c.total,
        "availableStock": c.available,
        "liveHolds": c.live_holds,
        "sold": c.sold,
        "problems": list(c.size_problems),
        "sizes": [
            {
                "size": s.count.size,
                "totalStock": s.count.total,
                "availableStock": s.count.available,
                "liveHolds": s.count.live_holds,
                "sold": s.count.sold,
                "totalStockPostgres": s.fact.total if s.fact else None,
                "soldPostgres": s.fact.sold if s.fact else None,
                "healthy": s.healthy,
            }
            for s in found.sizes
        ],
        "checkedAt": iso(found.checked_at),
    }


def _stats(found: Stats) -> dict[str, object]:
    first = found.last_second - len(found.outcomes) + 1
    return {
        "dropId": found.drop_id,
        "seconds": [
            {"at": iso(datetime.fromtimestamp(first + i, UTC)), "outcomes": outcomes}
            for i, outcomes in enumerate(found.outcomes)
        ],
        "totalStock": found.total,
        "availableStock": max(found.available, 0),
        "liveHolds": found.live_holds,
        "sold": found.sold,
        "sizes": [
            {
                "size": s.size,
                "totalStock": s.total,
                "availableStock": max(s.available, 0),
                "liveHolds": s.live_holds,
                "sold": s.sold,
            }
            for s in found.sizes
        ],
    }
