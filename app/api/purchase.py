"""Purchase, the one flow behind its entry points (as app/api/reserve.py is for reserve).

Without an `Idempotency-Key` it is served by the lean entry point (app/api/hot_paths.py:
the second storm of a drop is its winners buying at once); with one, by FastAPI's
routes (app/api/routes_holds.py), which keep and replay responses. Both routes, the
current one and the original `/api/drops/{id}/purchase`, call `purchase` here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.api import render
from app.api.bodies import empty_body
from app.api.reserve import Keeper, caller_of
from app.container import Container

PURCHASE_ROUTE = "/api/reservations/{reservation_id}/purchase"
LEGACY_PURCHASE_ROUTE = "/api/drops/{reservation_id}/purchase"


async def purchase(
    container: Container, request: Request, reservation_id: str, keeper: Keeper | None = None
) -> Response:
    """Buy the caller's held unit: 201 `Purchase`, or 200 with the purchase already made.

    Without a `keeper` the sign-out check rides on the claim script (on one Redis server).
    """
    caller = await caller_of(container, request, checked=keeper is not None)
    unchecked_session = (
        None if keeper is not None or container.settings.redis_cluster else caller.session_id
    )
    body = await empty_body(request)

    async def run() -> Response:
        result = await container.hold_service.purchase(
            caller.user_id, reservation_id, caller.display_name, unchecked_session
        )
        return render.JSONBody(
            render.purchase(result.purchase), status_code=201 if result.created else 200
        )

    if keeper is None:
        return await run()
    return await keeper(caller, body, run)
