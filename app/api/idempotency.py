"""Idempotency-Key for authenticated writes.

Scope is (user, method, path, key). The first final response is kept 24 h and
replayed byte for byte; the same key with another body is 422
IDEMPOTENCY_KEY_REUSED; a repeat that arrives while the first is running waits
for it (the first one holds a lease it renews while it runs, so a repeat of a request
whose process died runs within seconds). A response that asks for a retry is not final: a 5xx, and any answer
with `Retry-After` (429 RATE_LIMITED, 409 COOLDOWN). It is not kept, so a retry
after a store fault or after `Retry-After` runs again (a kept 429 or COOLDOWN
would refuse that key for 24 h).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from redis.exceptions import RedisError
from starlette.responses import Response

from app.api.problems import app_error_response
from app.errors import AppError, IdempotencyKeyReused, ServiceUnavailable, ValidationFailed
from app.store.idempotency import RENEW_SECONDS, IdempotencyStore

KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.02

Handler = Callable[[], Awaitable[Response]]


async def idempotent(
    request: Request, store: IdempotencyStore, user_id: str, body: bytes, handler: Handler
) -> Response:
    key = request.headers.get("idempotency-key")
    if key is None:
        return await handler()
    if not KEY_RE.match(key):
        raise ValidationFailed("Idempotency-Key must be 1 to 255 printable ASCII characters")
    scope = f"{request.method} {request.url.path} {key}"
    record_key = store.key(user_id, hashlib.sha256(scope.encode()).hexdigest())
    fingerprint = hashlib.sha256(body).hexdigest()
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        if await store.claim(record_key, fingerprint):
            return await _run_first(store, record_key, fingerprint, handler)
        stored = await store.read(record_key)
        if stored is None:
            continue  # the first attempt failed and let go; try to be first
        if stored["fp"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body"
            )
        if stored["state"] == "done":
            return Response(
                stored["body"].encode(),
                status_code=stored["status"],
                media_type=stored["type"],
                headers={"Idempotent-Replayed": "true"},
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable("The first request with this Idempotency-Key is still running")
        await asyncio.sleep(POLL_SECONDS)  # waiting on another request, polled


async def _renew(store: IdempotencyStore, record_key: str) -> None:
    """Keep the running request's lease alive; a failed renewal only shortens the lease."""
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        with contextlib.suppress(RedisError, OSError):
            await store.renew(record_key)


def is_final(response: Response) -> bool:
    """Whether a response settles the request (kept) or asks for a retry (not kept)."""
    status = response.status_code
    return status < 500 and status != 429 and "retry-after" not in response.headers


async def _run_first(
    store: IdempotencyStore, record_key: str, fingerprint: str, handler: Handler
) -> Response:
    renewing = asyncio.create_task(_renew(store, record_key))
    try:
        try:
            response = await handler()
        except AppError as exc:
            if exc.status >= 500:
                raise
            response = app_error_response(exc)
    except BaseException:
        await store.forget(record_key)
        raise
    finally:
        renewing.cancel()
    if not is_final(response):
        await store.forget(record_key)
        return response
    record = {
        "state": "done",
        "fp": fingerprint,
        "status": response.status_code,
        "type": response.media_type or response.headers.get("content-type", "application/json"),
        "body": bytes(response.body).decode(),
    }
    await store.keep(record_key, record)
    return response
