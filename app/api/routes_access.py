"""Fair access routes: a queue drop's waiting room, a draw drop's entries, and the
fairness record of both (docs/FAIRNESS.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from starlette.responses import Response

from app.api import render
from app.api.bodies import empty_body, reserve_body
from app.api.deps import ClientIP, ContainerDep, CurrentUser
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
    response_model=TicketOut,
    responses={
        200: {"model": TicketOut, "description": "The ticket the caller already has"},
        **errors(*SIGNED_IN, (409, "DROP_NOT_LIVE"), RATE_LIMITED),
    },
)
async def join_queue(
    drop_id: str, request: Request, caller: CurrentUser, ip: ClientIP, container: ContainerDep
) -> Response:
    await empty_body(request)
    await _limit(container, caller.user_id, ip)
    ticket, created = await container.access_service.join(caller.user_id, drop_id)
    return render.JSONBody(render.ticket(ticket), status_code=201 if created else 200)


@router.get(
    "/queue/me",
    response_model=TicketOut,
    responses=errors(*SIGNED_IN, (404, "NOT_IN_QUEUE")),
)
async def my_ticket(drop_id: str, caller: CurrentUser, container: ContainerDep) -> Response:
    return render.JSONBody(
        render.ticket(await container.access_service.ticket(caller.user_id, drop_id))
    )


@router.get("/queue", response_model=QueueOut, responses=errors(NOT_FOUND, MISMATCH, UNAVAILABLE))
async def queue_state(drop_id: str, container: ContainerDep) -> Response:
    return render.JSONBody(render.queue_state(await container.access_service.queue_state(drop_id)))


@router.post(
    "/entries",
    status_code=status.HTTP_201_CREATED,
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
    drop_id: str, request: Request, caller: CurrentUser, ip: ClientIP, container: ContainerDep
) -> Response:
    _, asked = await reserve_body(request)
    await _limit(container, caller.user_id, ip)
    entry, created = await container.access_service.enter(caller.user_id, drop_id, asked.sizes)
    return render.JSONBody(render.entry(entry), status_code=201 if created else 200)


@router.get(
    "/entries/me",
    response_model=EntryOut,
    responses=errors(*SIGNED_IN, (404, "NOT_ENTERED")),
)
async def my_entry(drop_id: str, caller: CurrentUser, container: ContainerDep) -> Response:
    return render.JSONBody(
        render.entry(await container.access_service.entry(caller.user_id, drop_id))
    )


@router.get("/fairness", response_model=FairnessOut, responses=errors(NOT_FOUND, UNAVAILABLE))
async def fairness_record(drop_id: str, container: ContainerDep) -> Response:
    record = await container.access_service.fairness(drop_id)
    return render.JSONBody(render.fairness_record(record))


@router.get(
    "/fairness/entries",
    response_model=list[OrderedEntryOut],
    responses=errors(NOT_FOUND, (409, "ORDER_NOT_FIXED"), UNAVAILABLE),
)
async def fairness_entries(drop_id: str, container: ContainerDep) -> Response:
    rows = await container.access_service.fairness_entries(drop_id)
    return render.JSONBody([{"entryId": r[0], "rankKey": r[1], "position": r[2]} for r in rows])
