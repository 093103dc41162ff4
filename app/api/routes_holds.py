"""Hold routes: reserve, purchase (both paths), cancel, and the caller's lists."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.responses import Response

from app.api import render
from app.api.deps import ClientIP, ContainerDep, CurrentUser
from app.api.hot_paths import require_empty_body
from app.api.idempotency import idempotent
from app.api.responses import (
    IDEMPOTENCY,
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    VALIDATION,
    errors,
)
from app.api.schemas import PurchaseOut, ReservationOut

router = APIRouter(tags=["reservations"])

COMMON = (UNAUTHORIZED, VALIDATION, TOO_LARGE, UNAVAILABLE, IDEMPOTENCY)
PURCHASE_ERRORS = errors(
    *COMMON,
    (404, "RESERVATION_NOT_FOUND"),
    (410, "RESERVATION_EXPIRED"),
    (409, "RESERVATION_CANCELLED"),
)


async def _empty_body(request: Request) -> bytes:
    """These routes take no fields: an empty body or `{}`."""
    body = await request.body()
    require_empty_body(body)
    return body


@router.post(
    "/api/drops/{drop_id}/reserve",
    status_code=status.HTTP_201_CREATED,
    response_model=ReservationOut,
    responses=errors(
        *COMMON,
        (404, "DROP_NOT_FOUND"),
        (409, "DROP_NOT_LIVE"),
        (409, "SOLD_OUT"),
        (409, "LIMIT_REACHED"),
        (409, "COOLDOWN"),
        RATE_LIMITED,
    ),
)
async def reserve(
    drop_id: str, request: Request, caller: CurrentUser, container: ContainerDep, ip: ClientIP
) -> Response:
    body = await _empty_body(request)

    async def run() -> Response:
        await container.rate_limiter.hit("reserve", caller.user_id)
        await container.rate_limiter.hit("reserve_ip", ip)
        held = await container.reservations.reserve(caller.user_id, drop_id)
        return render.JSONBody(render.reservation(held), status_code=201)

    return await idempotent(request, container.redis, caller.user_id, body, run)


async def _purchase(
    reservation_id: str, request: Request, caller: CurrentUser, container: ContainerDep
) -> Response:
    body = await _empty_body(request)

    async def run() -> Response:
        result = await container.reservations.purchase(
            caller.user_id, reservation_id, caller.display_name
        )
        return render.JSONBody(
            render.purchase(result.purchase), status_code=201 if result.created else 200
        )

    return await idempotent(request, container.redis, caller.user_id, body, run)


@router.post(
    "/api/reservations/{reservation_id}/purchase",
    status_code=status.HTTP_201_CREATED,
    response_model=PurchaseOut,
    responses={200: {"model": PurchaseOut, "description": "Already purchased"}, **PURCHASE_ERRORS},
)
async def purchase(
    reservation_id: str, request: Request, caller: CurrentUser, container: ContainerDep
) -> Response:
    return await _purchase(reservation_id, request, caller, container)


@router.post(
    "/api/drops/{reservation_id}/purchase",
    status_code=status.HTTP_201_CREATED,
    response_model=PurchaseOut,
    responses={200: {"model": PurchaseOut, "description": "Already purchased"}, **PURCHASE_ERRORS},
    summary="Purchase (the original route; the id is a reservation id)",
)
async def purchase_legacy(
    reservation_id: str, request: Request, caller: CurrentUser, container: ContainerDep
) -> Response:
    return await _purchase(reservation_id, request, caller, container)


@router.delete(
    "/api/reservations/{reservation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(
        UNAUTHORIZED,
        VALIDATION,
        UNAVAILABLE,
        (404, "RESERVATION_NOT_FOUND"),
        (409, "RESERVATION_PURCHASED"),
    ),
)
async def cancel(reservation_id: str, caller: CurrentUser, container: ContainerDep) -> Response:
    await container.reservations.cancel(caller.user_id, reservation_id)
    return Response(status_code=204)


@router.get(
    "/api/me/reservations",
    response_model=list[ReservationOut],
    responses=errors(UNAUTHORIZED, UNAVAILABLE),
)
async def my_reservations(caller: CurrentUser, container: ContainerDep) -> Response:
    drop_ids = await container.drops.index()
    held = await container.reservations.my_reservations(caller.user_id, drop_ids)
    return render.JSONBody([render.reservation(r) for r in held])


@router.get(
    "/api/me/purchases",
    response_model=list[PurchaseOut],
    responses=errors(UNAUTHORIZED, UNAVAILABLE),
)
async def my_purchases(caller: CurrentUser, container: ContainerDep) -> Response:
    rows = await container.reservations.my_purchases(caller.user_id)
    return render.JSONBody([render.purchase(p) for p in rows])
