"""Hold routes: reserve, purchase (both paths), cancel, and the caller's lists."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Security, status
from starlette.responses import Response

from app.api import render
from app.api.deps import BEARER, ContainerDep, CurrentUser
from app.api.idempotency import idempotent
from app.api.purchase import LEGACY_PURCHASE_ROUTE, PURCHASE_ROUTE
from app.api.purchase import purchase as purchase_flow
from app.api.reserve import RESERVE_ROUTE, Run
from app.api.reserve import reserve as reserve_flow
from app.api.responses import (
    IDEMPOTENCY,
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    VALIDATION,
    errors,
)
from app.api.schemas import PurchaseOut, ReservationOut, ReserveBody
from app.services.tokens import AccessClaims

router = APIRouter(tags=["reservations"])

COMMON = (UNAUTHORIZED, VALIDATION, TOO_LARGE, UNAVAILABLE, IDEMPOTENCY)
PURCHASE_ERRORS = errors(
    *COMMON,
    (404, "RESERVATION_NOT_FOUND"),
    (410, "RESERVATION_EXPIRED"),
    (409, "RESERVATION_CANCELLED"),
)


@router.post(
    RESERVE_ROUTE,
    status_code=status.HTTP_201_CREATED,
    response_model=ReservationOut,
    dependencies=[Security(BEARER)],  # the flow reads the token itself (app/api/reserve.py)
    responses=errors(
        *COMMON,
        (404, "DROP_NOT_FOUND"),
        (409, "DROP_NOT_LIVE"),
        (409, "SOLD_OUT"),
        (409, "LIMIT_REACHED"),
        (409, "COOLDOWN"),
        (409, "SIZE_SOLD_OUT"),
        (403, "NOT_ADMITTED"),
        (422, "SIZE_REQUIRED"),
        (422, "UNKNOWN_SIZE"),
        RATE_LIMITED,
    ),
    # The flow reads its own body (app/api/bodies.py reserve_body): declared for the schema.
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": ReserveBody.model_json_schema(by_alias=True)}
            },
        }
    },
)
async def reserve(drop_id: str, request: Request, container: ContainerDep) -> Response:
    # Served here only with an Idempotency-Key (see app/api/reserve.py). No docstring:
    # it would become the route's description in the OpenAPI schema.

    async def keep(caller: AccessClaims, body: bytes, run: Run) -> Response:
        return await idempotent(request, container.idempotency_store, caller.user_id, body, run)

    return await reserve_flow(container, request, drop_id, keep)


# Both purchase routes share one endpoint; the original route keeps its own name, so
# each keeps its operationId. (No docstring: it would become both routes' description.)
PURCHASE: dict[str, Any] = {
    "status_code": status.HTTP_201_CREATED,
    "dependencies": [Security(BEARER)],  # the flow reads the token itself (app/api/purchase.py)
    "response_model": PurchaseOut,
    "responses": {
        200: {"model": PurchaseOut, "description": "Already purchased"},
        **PURCHASE_ERRORS,
    },
}


@router.post(PURCHASE_ROUTE, **PURCHASE)
async def purchase(reservation_id: str, request: Request, container: ContainerDep) -> Response:
    # Served here only with an Idempotency-Key (see app/api/purchase.py).

    async def keep(caller: AccessClaims, body: bytes, run: Run) -> Response:
        return await idempotent(request, container.idempotency_store, caller.user_id, body, run)

    return await purchase_flow(container, request, reservation_id, keep)


router.add_api_route(
    LEGACY_PURCHASE_ROUTE,
    purchase,
    methods=["POST"],
    name="purchase_legacy",
    summary="Purchase (the original route; the id is a reservation id)",
    **PURCHASE,
)


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
    await container.hold_service.cancel(caller.user_id, reservation_id)
    return Response(status_code=204)


@router.get(
    "/api/me/reservations",
    response_model=list[ReservationOut],
    responses=errors(UNAUTHORIZED, UNAVAILABLE),
)
async def my_reservations(caller: CurrentUser, container: ContainerDep) -> Response:
    drop_ids = await container.drop_store.index()
    held = await container.hold_service.holds_of(caller.user_id, drop_ids)
    return render.JSONBody([render.hold(r) for r in held])


@router.get(
    "/api/me/purchases",
    response_model=list[PurchaseOut],
    responses=errors(UNAUTHORIZED, UNAVAILABLE),
)
async def my_purchases(caller: CurrentUser, container: ContainerDep) -> Response:
    rows = await container.hold_service.my_purchases(caller.user_id)
    return render.JSONBody([render.purchase(p) for p in rows])
