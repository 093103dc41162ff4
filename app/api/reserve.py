"""Reserve, the one flow behind both of its entry points.

A reserve without an `Idempotency-Key` is served by the lean entry point
(app/api/hot_paths.py, for a drop storm's throughput); one with a key by FastAPI's
route (app/api/routes_holds.py), which keeps and replays responses. Both call
`reserve` here, so the caller, the body check, the rate limits, the service call
and the rendered answer are written once; tests/integration/test_reserve_parity.py
keeps the two entry points identical on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.api import render
from app.api.bodies import reserve_body
from app.api.deps import bearer_token, client_ip
from app.container import Container
from app.services.tokens import AccessClaims

# The route's template: FastAPI's declaration and the metrics label of both entry points.
RESERVE_ROUTE = "/api/drops/{drop_id}/reserve"

Run = Callable[[], Awaitable[Response]]
# Wraps the work once the caller and body are known (idempotency, on the keyed route).
Keeper = Callable[[AccessClaims, bytes, Run], Awaitable[Response]]


async def caller_of(container: Container, request: Request, checked: bool) -> AccessClaims:
    """The bearer's claims; `checked` also asks Redis whether the session was signed out."""
    token = bearer_token(request)
    if checked or container.settings.redis_cluster:
        return await container.auth_service.authenticate(token)
    # Unchecked: the script (reserve, purchase claim) checks the sign-out marker in its call.
    return container.auth_service.verify(token)


async def script_checked_caller(
    container: Container, request: Request
) -> tuple[AccessClaims, str | None]:
    """The bearer's claims, and the session the caller's script is to check for a sign-out
    in its own call (None on a cluster, where the caller was checked apart)."""
    caller = await caller_of(container, request, checked=False)
    return caller, None if container.settings.redis_cluster else caller.session_id


async def reserve(
    container: Container, request: Request, drop_id: str, keeper: Keeper | None = None
) -> Response:
    """Hold one unit of `drop_id` for the caller and answer 201 `Reservation`.

    Without a `keeper` the sign-out check rides on the reserve script (on one Redis
    server); with one, the caller is checked first, since a kept answer may be
    replayed without reaching the script.
    """
    caller = await caller_of(container, request, checked=keeper is not None)
    unchecked_session = (
        None if keeper is not None or container.settings.redis_cluster else caller.session_id
    )
    ip = client_ip(request, container.settings.trusted_proxies)
    body, asked = await reserve_body(request)

    async def run() -> Response:
        await container.rate_limiter.hit("reserve", caller.user_id)
        await container.rate_limiter.hit("reserve_ip", ip)
        held = await container.hold_service.reserve(
            caller.user_id, drop_id, unchecked_session, asked.sizes
        )
        return render.JSONBody(render.hold(held), status_code=201)

    if keeper is None:
        return await run()
    return await keeper(caller, body, run)
