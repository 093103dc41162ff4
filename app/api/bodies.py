"""Request bodies of the routes that take no fields: empty or `{}`."""

from __future__ import annotations

import orjson
from starlette.requests import Request

from app.errors import ValidationFailed


def require_empty_body(body: bytes) -> None:
    """Routes that take no fields accept an empty body or `{}`."""
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValidationFailed("Body must be empty or {}") from None
        if parsed != {}:
            raise ValidationFailed("Body must be empty or {}")


async def empty_body(request: Request) -> bytes:
    """The request's body, checked to be empty or `{}` (kept for the idempotency check)."""
    body = await request.body()
    require_empty_body(body)
    return body
