"""Fair access routes: a queue drop's waiting room, a draw drop's entries, and the
fairness record of both (docs/FAIRNESS.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Security, status
from starlette.responses import Response

from app.api import access_flows, render
from app.api.access_flows import ENTRIES_ROUTE, ENTRY_ROUTE, QUEUE_ROUTE, TICKET_ROUTE
from app.api.deps import BEARER, ContainerDep
from app.api.responses import (
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    VALIDATION,
    errors,
)
from app.api.schemas import (
    EntryOut,
    FairnessOut,
    OrderedEntryOut,
    QueueOut,
    ReserveBody,
    TicketOut,
)

router = APIRouter(tags=["fair access"])

NOT_FOUND = (404, "DROP_NOT_FOUND")
MISMATCH = (409, "ACCESS_MODE_MISMATCH")
SIGNED_IN = (UNAUTHORIZED, VALIDATION, TOO_LARGE, UNAVAILABLE, NOT_FOUND, MISMATCH)


@router.post(
    QUEUE_ROUTE,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Security(BEARER)],  # the route reads the token itself (script-checked)
    response_model=TicketOut,
    responses={
        200: {"model": TicketOut, "description": "The ticket the caller already has"},
        **errors(*SIGNED_IN, (409, "DROP_NOT_LIVE"), RATE_LIMITED),
    },
)
async def join_queue(drop_id: str, request: Request, container: ContainerDep) -> Response:
    # Served here only when the lean path does not (app/api/access_flows.py). No
    # docstring: it would become the route's description in the OpenAPI schema.
    return await access_flows.join(container, request, drop_id)


@router.get(
    TICKET_ROUTE,
    response_model=TicketOut,
    dependencies=[Security(BEARER)],
    responses=errors(*SIGNED_IN, (404, "NOT_IN_QUEUE")),
)
async def my_ticket(drop_id: str, request: Request, container: ContainerDep) -> Response:
    return await access_flows.ticket(container, request, drop_id)


@router.get(
    QUEUE_ROUTE,
    response_model=QueueOut,
    responses=errors(NOT_FOUND, MISMATCH, VALIDATION, UNAVAILABLE),
)
async def queue_state(drop_id: str, container: ContainerDep) -> Response:
    return render.JSONBody(render.queue_state(await container.access_service.queue_state(drop_id)))


@router.post(
    ENTRIES_ROUTE,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Security(BEARER)],
    response_model=EntryOut,
    responses={
        200: {"model": EntryOut, "description": "The entry the caller already has"},
        **errors(
            *SIGNED_IN,
            (409, "ENTRIES_CLOSED"),
            (422, "SIZE_REQUIRED"),
            (422, "UNKNOWN_SIZE"),
            RATE_LIMITED,
        ),
    },
    # The route reads its own body (app/api/bodies.py): declared for the schema.
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": ReserveBody.model_json_schema(by_alias=True)}
            },
        }
    },
)
async def enter_draw(drop_id: str, request: Request, container: ContainerDep) -> Response:
    return await access_flows.enter(container, request, drop_id)


@router.get(
    ENTRY_ROUTE,
    response_model=EntryOut,
    dependencies=[Security(BEARER)],
    responses=errors(*SIGNED_IN, (404, "NOT_ENTERED")),
)
async def my_entry(drop_id: str, request: Request, container: ContainerDep) -> Response:
    return await access_flows.entry(container, request, drop_id)


@router.get(
    "/api/drops/{drop_id}/fairness",
    response_model=FairnessOut,
    responses=errors(NOT_FOUND, VALIDATION, UNAVAILABLE),
)
async def fairness_record(drop_id: str, container: ContainerDep) -> Response:
    record = await container.access_service.fairness(drop_id)
    return render.JSONBody(render.fairness_record(record))


@router.get(
    "/api/drops/{drop_id}/fairness/entries",
    response_model=list[OrderedEntryOut],
    responses=errors(NOT_FOUND, (409, "ORDER_NOT_FIXED"), VALIDATION, UNAVAILABLE),
)
async def fairness_entries(drop_id: str, container: ContainerDep) -> Response:
    rows = await container.access_service.fairness_entries(drop_id)
    return render.JSONBody([{"entryId": r[0], "rankKey": r[1], "position": r[2]} for r in rows])
