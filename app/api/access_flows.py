"""Joining a queue, reading one's ticket, entering a draw and reading one's entry: the one
flow of each behind its two entry points (as app/api/reserve.py is for reserve).

A queue's shoppers join in the minute before a drop and then poll their ticket every few
seconds, so these are storm routes: app/api/hot_paths.py serves them without FastAPI's
layers, app/api/routes_access.py declares them (and serves them when the lean path does
not: a query string, say). Both call the functions here. The caller's token is verified
here and its sign-out checked inside the script (one Redis call in all).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api import render
from app.api.bodies import empty_body, reserve_body
from app.api.deps import client_ip
from app.api.reserve import script_checked_caller
from app.container import Container

QUEUE_ROUTE = "/api/drops/{drop_id}/queue"
TICKET_ROUTE = "/api/drops/{drop_id}/queue/me"
ENTRIES_ROUTE = "/api/drops/{drop_id}/entries"
ENTRY_ROUTE = "/api/drops/{drop_id}/entries/me"


async def _limit(container: Container, request: Request, user_id: str) -> None:
    """Joining and entering count against the caller's reserve limits."""
    await container.rate_limiter.hit("reserve", user_id)
    await container.rate_limiter.hit(
        "reserve_ip", client_ip(request, container.settings.trusted_proxies)
    )


async def join(container: Container, request: Request, drop_id: str) -> Response:
    """201 with a new ticket, 200 with the caller's ticket."""
    caller, session = await script_checked_caller(container, request)
    await empty_body(request)
    await _limit(container, request, caller.user_id)
    ticket, created = await container.access_service.join(caller.user_id, drop_id, session)
    return render.JSONBody(render.ticket(ticket), status_code=201 if created else 200)


async def ticket(container: Container, request: Request, drop_id: str) -> Response:
    caller, session = await script_checked_caller(container, request)
    found = await container.access_service.ticket(caller.user_id, drop_id, session)
    return render.JSONBody(render.ticket(found))


async def enter(container: Container, request: Request, drop_id: str) -> Response:
    """201 with a new entry, 200 with the caller's entry (the first body stands)."""
    caller, session = await script_checked_caller(container, request)
    _, asked = await reserve_body(request)
    await _limit(container, request, caller.user_id)
    entry, created = await container.access_service.enter(
        caller.user_id, drop_id, asked.sizes, session
    )
    return render.JSONBody(render.entry(entry), status_code=201 if created else 200)


async def entry(container: Container, request: Request, drop_id: str) -> Response:
    caller, session = await script_checked_caller(container, request)
    found = await container.access_service.entry(caller.user_id, drop_id, session)
    return render.JSONBody(render.entry(found))
