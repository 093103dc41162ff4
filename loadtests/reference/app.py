"""The reference server: a bare ASGI app doing what a reserve cannot do without.

For `POST /api/drops/{dropId}/reserve` it verifies the bearer JWT exactly as the
product does for an access token (HS256 pinned, same secret, issuer, audience and
required claims) and runs ONE `EVALSHA` of `lua/reserve.lua` with the KEYS and ARGV
the product passes (`reserve_call`, checked against `HoldStore.reserve` in
loadtests/tests/test_storm_reference.py). It answers like the product: 201 with the
reservation, or problem+json (401, 404, 409 with the script's code). Nothing else:
no framework, no revocation check, no rate limiter, no idempotency, no metrics.
`loadtests/storm.py` runs it beside the product, same Redis, same worker count, so
the ratio of their throughputs is the product's own overhead.

    REDIS_URL=redis://127.0.0.1:6379/0 JWT_ACCESS_SECRET=... RESERVATION_TTL_SECONDS=60 \\
    python -m uvicorn loadtests.reference.app:app --workers 1 --loop uvloop --http httptools

`/healthz` and `/readyz` answer 200 (readiness once the script is loaded).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt
import orjson

from app.domain import from_ms, iso
from app.services.tokens import ALGORITHM, AUDIENCE, ISSUER, REQUIRED_CLAIMS
from app.store.channels import database_of_url, stock_dirty_channel
from app.store.client import create_redis
from app.store.keys import DROP_ID_RE, DropKeys, new_hold_id, revoked_session
from app.store.scripts import ScriptName, read_source

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROBLEM_TYPE_BASE = "https://sneakerdrop.dev/problems/"
PREFIX, SUFFIX = "/api/drops/", "/reserve"
TITLES = {
    "UNAUTHORIZED": "Authentication required",
    "NOT_FOUND": "Not found",
    "DROP_NOT_FOUND": "Drop not found",
    "DROP_NOT_LIVE": "Drop is not live",
    "LIMIT_REACHED": "Per-user limit reached",
    "SOLD_OUT": "Sold out",
}
STATUS = {"UNAUTHORIZED": 401, "NOT_FOUND": 404, "DROP_NOT_FOUND": 404}  # the rest: 409


def reserve_call(
    drop_id: str,
    user_id: str,
    reservation_id: str,
    ttl_ms: int,
    channel: str,
    session_id: str | None = None,
    cooldown_ms: int = 0,
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of reserve.lua, as `HoldStore.reserve` passes them.

    `channel` is the stock-dirty channel of the Redis database in use
    (`stock_dirty_channel(database_of_url(REDIS_URL))`); `cooldown_ms` the product's
    RESERVE_COOLDOWN_SECONDS in ms.
    """
    keys = DropKeys(drop_id)
    return (
        [
            keys.drop,
            keys.users,
            keys.holds,
            keys.due,
            keys.timer(reservation_id),
            keys.user_holds(user_id),
            keys.cooldown(user_id),
            keys.sizes,
            keys.hold_sizes,
            keys.q_users,
            keys.q_tix,
            *([] if session_id is None else [revoked_session(session_id)]),
        ],
        [user_id, reservation_id, ttl_ms, channel, drop_id, cooldown_ms],
    )


def access_user(header: bytes, secret: str) -> tuple[str, str] | None:
    """(user id, session id) of a valid access token in an `Authorization: Bearer` value."""
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    sub = claims.get("sub")
    if claims.get("typ") != "access" or not isinstance(sub, str):
        return None
    sid = claims.get("sid")
    if not isinstance(sid, str) or claims.get("role") not in ("customer", "admin"):
        return None
    return sub, sid


def problem(code: str) -> tuple[int, bytes]:
    """The product's problem+json for `code` (its SOLD_OUT carries the same detail and extra)."""
    status = STATUS.get(code, 409)
    title = TITLES.get(code, code)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": title,
        "code": code,
    }
    if code == "SOLD_OUT":
        body.update(detail="No units left; holds that expire return to stock", available=0)
    return status, orjson.dumps(body)


async def respond(send: Send, status: int, body: bytes, media: bytes) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


PROBLEM_MEDIA = b"application/problem+json"


class BareApp:
    """What the references share: the ASGI lifespan, one `POST {prefix}{id}{suffix}`
    route, the health checks and the caller's access token."""

    prefix = ""
    suffix = ""

    def __init__(self) -> None:
        self.secret = ""

    async def startup(self) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError

    async def handle(self, resource_id: str, scope: Scope, send: Send, /) -> None:
        """Answer `POST {prefix}{resource_id}{suffix}`."""
        raise NotImplementedError

    def problem(self, code: str) -> tuple[int, bytes]:
        return problem(code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        path: str = scope["path"]
        prefix, suffix = self.prefix, self.suffix
        if path.startswith(prefix) and path.endswith(suffix) and scope["method"] == "POST":
            await self.handle(path[len(prefix) : -len(suffix)], scope, send)
        elif path in ("/healthz", "/readyz"):
            await respond(send, 200, b'{"status":"ok"}', b"application/json")
        else:
            await respond(send, *self.problem("NOT_FOUND"), PROBLEM_MEDIA)

    async def caller(self, scope: Scope, send: Send) -> tuple[str, str] | None:
        """The caller's (user id, session id); None once 401 UNAUTHORIZED is answered."""
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        caller = access_user(header, self.secret)
        if caller is None:
            await respond(send, *self.problem("UNAUTHORIZED"), PROBLEM_MEDIA)
        return caller

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Reference(BareApp):
    """The ASGI callable; one per worker process, its Redis client made in the lifespan."""

    prefix, suffix = PREFIX, SUFFIX

    def __init__(self) -> None:
        super().__init__()
        self.ttl_ms = 0
        self.cooldown_ms = 0
        self.channel = ""
        self.redis: Any = None
        self.sha = ""

    async def startup(self) -> None:
        """Read the environment (at start-up, so importing this module needs none)."""
        self.secret = os.environ["JWT_ACCESS_SECRET"]
        self.ttl_ms = int(os.environ.get("RESERVATION_TTL_SECONDS", "60")) * 1000
        self.cooldown_ms = int(os.environ.get("RESERVE_COOLDOWN_SECONDS", "10")) * 1000
        self.channel = stock_dirty_channel(database_of_url(os.environ["REDIS_URL"]))
        self.redis = create_redis(os.environ["REDIS_URL"])
        self.sha = await self.redis.script_load(read_source(ScriptName.RESERVE))

    async def shutdown(self) -> None:
        await self.redis.aclose()

    async def reserve(self, drop_id: str, scope: Scope, send: Send) -> None:
        caller = await self.caller(scope, send)
        if caller is None:
            return
        user_id, session_id = caller
        if not DROP_ID_RE.match(drop_id):
            await respond(send, *problem("DROP_NOT_FOUND"), PROBLEM_MEDIA)
            return
        reservation_id = new_hold_id(drop_id, user_id)
        keys, args = reserve_call(
            drop_id,
            user_id,
            reservation_id,
            self.ttl_ms,
            self.channel,
            session_id,
            self.cooldown_ms,
        )
        reply = await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        if reply[0] != "OK":
            await respond(send, *problem(reply[0]), PROBLEM_MEDIA)
            return
        body = {
            "id": reservation_id,
            "dropId": drop_id,
            "status": "ACTIVE",
            "expiresAt": iso(from_ms(int(reply[1]))),
            "createdAt": iso(from_ms(int(reply[2]))),
        }
        await respond(send, 201, orjson.dumps(body), b"application/json")

    handle = reserve  # the route's handler, called by BareApp.__call__


app = Reference()
