"""Fair access routes: a queue drop's waiting room, a draw drop's entries, and the
fairness record of both (docs/FAIRNESS.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Security, status
from starlette.responses import Response

from app.api import render
from app.api.bodies import empty_body, reserve_body
from app.api.deps import BEARER, ClientIP, ContainerDep
from app.api.reserve import script_checked_caller
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
from app.container import Container

router = APIRouter(prefix="/api/drops/{drop_id}", tags=["fair access"])

NOT_FOUND = (404, "DROP_NOT_FOUND")
MISMATCH = (409, "ACCESS_MODE_MISMATCH")
SIGNED_IN = (UNAUTHORIZED, VALIDATION, TOO_LARGE, UNAVAILABLE, NOT_FOUND, MISMATCH)


async def _limit(container: Container, user_id: str, ip: str) -> None:
    """Joining and entering count against the caller's reserve limits."""
    await container.rate_limiter.hit("reserve", user_id)
    await container.rate_limiter.hit("reserve_ip", ip)


@router.post(
    "/queue",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Security(BEARER)],  # the route reads the token itself (script-checked)
    response_model=TicketOut,
    responses={
        200: {"model": TicketOut, "description": "The ticket the caller already has"},
        **errors(*SIGNED_IN, (409, "DROP_NOT_LIVE"), RATE_LIMITED),
    },
)
async def join_queue(
    drop_id: str, request: Request, ip: ClientIP, container: ContainerDep
) -> Response:
    caller, session = await script_checked_caller(container, request)
    await empty_body(request)
    await _limit(container, caller.user_id, ip)
    ticket, created = await container.access_service.join(caller.user_id, drop_id, session)
    return render.JSONBody(render.ticket(ticket), status_code=201 if created else 200)


@router.get(
    "/queue/me",
    response_model=TicketOut,
    dependencies=[Security(BEARER)],
    responses=errors(*SIGNED_IN, (404, "NOT_IN_QUEUE")),
)
async def my_ticket(drop_id: str, request: Request, container: ContainerDep) -> Response:
    caller, session = await script_checked_caller(container, request)
    ticket = await container.access_service.ticket(caller.user_id, drop_id, session)
    return render.JSONBody(render.ticket(ticket))


@router.get(
    "/queue",
    response_model=QueueOut,
    responses=errors(NOT_FOUND, MISMATCH, VALIDATION, UNAVAILABLE),
)
async def queue_state(drop_id: str, container: ContainerDep) -> Response:
    return render.JSONBody(render.queue_state(await container.access_service.queue_state(drop_id)))


@router.post(
    "/entries",
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
async def enter_draw(
    drop_id: str, request: Request, ip: ClientIP, container: ContainerDep
) -> Response:
    caller, session = await script_checked_caller(container, request)
    _, asked = await reserve_body(request)
    await _limit(container, caller.user_id, ip)
    entry, created = await container.access_service.enter(
        caller.user_id, drop_id, asked.sizes, session
    )
    return render.JSONBody(render.entry(entry), status_code=201 if created else 200)


@router.get(
    "/entries/me",
    response_model=EntryOut,
    dependencies=[Security(BEARER)],
    responses=errors(*SIGNED_IN, (404, "NOT_ENTERED")),
)
async def my_entry(drop_id: str, request: Request, container: ContainerDep) -> Response:
    caller, session = await script_checked_caller(container, request)
    entry = await container.access_service.entry(caller.user_id, drop_id, session)
    return render.JSONBody(render.entry(entry))


@router.get(
    "/fairness", response_model=FairnessOut, responses=errors(NOT_FOUND, VALIDATION, UNAVAILABLE)
)
async def fairness_record(drop_id: str, container: ContainerDep) -> Response:
    record = await container.access_service.fairness(drop_id)
    return render.JSONBody(render.fairness_record(record))


@router.get(
    "/fairness/entries",
    response_model=list[OrderedEntryOut],
    responses=errors(NOT_FOUND, (409, "ORDER_NOT_FIXED"), VALIDATION, UNAVAILABLE),
)
async def fairness_entries(drop_id: str, container: ContainerDep) -> Response:
    rows = await container.access_service.fairness_entries(drop_id)
    return render.JSONBody([{"entryId": r[0], "rankKey": r[1], "position": r[2]} for r in rows])
