"""Drop routes: list and get for anyone; create, patch, restock for admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from starlette.responses import Response

from app.api import render
from app.api.deps import ContainerDep, CurrentAdmin
from app.api.idempotency import idempotent
from app.api.responses import (
    FORBIDDEN,
    IDEMPOTENCY,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    VALIDATION,
    errors,
)
from app.api.schemas import DropCreateBody, DropOut, DropPatchBody, RestockBody
from app.domain import Access, AccessSettings, DropFields, DropStatus
from app.services.drops import DropPatch

router = APIRouter(prefix="/api/drops", tags=["drops"])

StatusFilter = Literal["scheduled", "live", "sold_out", "ended", "cancelled", "all"]
NOT_FOUND = (404, "DROP_NOT_FOUND")
ADMIN_ERRORS = (UNAUTHORIZED, FORBIDDEN, VALIDATION, TOO_LARGE, UNAVAILABLE)


@router.get("", response_model=list[DropOut], responses=errors(VALIDATION, UNAVAILABLE))
async def list_drops(
    container: ContainerDep,
    status_filter: Annotated[StatusFilter | None, Query(alias="status")] = None,
) -> Response:
    everything = status_filter == "all"
    wanted = DropStatus(status_filter) if status_filter and not everything else None
    views = await container.drop_service.list(wanted, everything=everything)
    return render.JSONBody([render.drop(v) for v in views])


@router.get(
    "/{drop_id}", response_model=DropOut, responses=errors(NOT_FOUND, VALIDATION, UNAVAILABLE)
)
async def get_drop(drop_id: str, container: ContainerDep) -> Response:
    return render.JSONBody(render.drop(await container.drop_service.get(drop_id)))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DropOut,
    responses=errors(*ADMIN_ERRORS, IDEMPOTENCY),
)
async def create_drop(
    body: DropCreateBody, request: Request, admin: CurrentAdmin, container: ContainerDep
) -> Response:
    new = DropFields(
        **{
            **body.model_dump(exclude={"sizes", "access", "queue", "draw"}),
            "image_url": str(body.image_url) if body.image_url else None,
            "starts_at": body.starts_at or datetime.now(UTC),  # a drop without one opens now
        }
    )
    sizes = [(s.size, s.total_stock) for s in body.sizes or ()]
    access = AccessSettings(
        access=Access(body.access),
        admit_per_minute=body.queue.admit_per_minute if body.queue else None,
        pass_seconds=body.queue.pass_seconds if body.queue else None,
        closes_at=body.draw.closes_at if body.draw else None,
        claim_seconds=body.draw.claim_seconds if body.draw else None,
    )

    async def run() -> Response:
        view = await container.drop_service.create(new, sizes, access)
        return render.JSONBody(render.drop(view), status_code=201)

    return await idempotent(
        request, container.idempotency_store, admin.user_id, await request.body(), run
    )


@router.patch(
    "/{drop_id}",
    response_model=DropOut,
    responses=errors(*ADMIN_ERRORS, NOT_FOUND, (409, "INVALID_STATE")),
)
async def patch_drop(
    drop_id: str, body: DropPatchBody, admin: CurrentAdmin, container: ContainerDep
) -> Response:
    patch = DropPatch(
        name=body.name,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        cancel=body.status == "cancelled",
    )
    return render.JSONBody(render.drop(await container.drop_service.update(drop_id, patch)))


@router.post(
    "/{drop_id}/restock",
    response_model=DropOut,
    responses=errors(
        *ADMIN_ERRORS,
        NOT_FOUND,
        (409, "INVALID_STATE"),
        (422, "SIZE_REQUIRED"),
        (422, "UNKNOWN_SIZE"),
        IDEMPOTENCY,
    ),
)
async def restock_drop(
    drop_id: str,
    body: RestockBody,
    request: Request,
    admin: CurrentAdmin,
    container: ContainerDep,
) -> Response:
    async def run() -> Response:
        view = await container.drop_service.restock(drop_id, body.quantity, body.size)
        return render.JSONBody(render.drop(view))

    return await idempotent(
        request, container.idempotency_store, admin.user_id, await request.body(), run
    )
