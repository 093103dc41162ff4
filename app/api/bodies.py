"""Request bodies read by the routes that parse their own: empty, `{}`, or reserve's."""

from __future__ import annotations

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request

from app.api.schemas import ReserveBody
from app.errors import ValidationFailed

NOTHING_ASKED = ReserveBody()


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


async def reserve_body(request: Request) -> tuple[bytes, ReserveBody]:
    """The raw body (for the idempotency check) and what it asks for: empty or `{}` asks
    for no size. Malformed: 422 VALIDATION_ERROR, as FastAPI's own routes answer."""
    body = await request.body()
    if not body.strip():
        return body, NOTHING_ASKED
    try:
        return body, ReserveBody.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None
