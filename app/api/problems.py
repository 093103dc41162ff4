"""One place that renders every error as RFC 9457 problem+json.

Domain errors carry their status and code; the framework's own errors (404 for
an unknown route, 405, request validation) are mapped onto the same shape.
Anything unexpected is logged with the request id and answered as a bare 500
that reveals nothing; a store that does not answer is a 503.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.db.unavailable import is_unavailable
from app.errors import AppError, Cooldown, RateLimited

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://sneakerdrop.dev/problems/"
PROBLEM_JSON = "application/problem+json"

_HTTP_CODES = {
    400: ("BAD_REQUEST", "Bad request"),
    401: ("UNAUTHORIZED", "Authentication required"),
    403: ("FORBIDDEN", "Not allowed"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    406: ("NOT_ACCEPTABLE", "Not acceptable"),
    413: ("PAYLOAD_TOO_LARGE", "Request body too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"),
    422: ("VALIDATION_ERROR", "Invalid request"),
    429: ("RATE_LIMITED", "Too many requests"),
    503: ("SERVICE_UNAVAILABLE", "Service temporarily unavailable"),
}


def problem_body(
    status: int, code: str, title: str, detail: str, extra: dict[str, Any] | None = None
) -> bytes:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return orjson.dumps(body)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        problem_body(status, code, title, detail, extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def app_error_response(exc: AppError) -> Response:
    headers = None
    if isinstance(exc, RateLimited | Cooldown):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, str | int | float | bool)}
    return problem_response(
        exc.status, exc.code, exc.title, exc.detail, extra=extra or None, headers=headers
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    errors = []
    for err in exc.errors()[:20]:
        loc = [str(part) for part in err.get("loc", ())]
        errors.append({"loc": loc, "msg": str(err.get("msg", ""))[:200], "type": err.get("type")})
    return errors


def validation_response(exc: RequestValidationError) -> Response:
    """422 VALIDATION_ERROR naming the first field at fault, with every error listed."""
    errors = _validation_errors(exc)
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    loc = cast(list[str], first["loc"])
    where = ".".join(p for p in loc if p != "body")
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    return problem_response(
        422, "VALIDATION_ERROR", "Invalid request", detail, extra={"errors": errors}
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return app_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's only 400: a body it cannot decode (not UTF-8). Invalid JSON is
            # already a 422, and the contract calls every malformed request that.
            return problem_response(
                422, "VALIDATION_ERROR", "Invalid request", "The body is not UTF-8 encoded JSON"
            )
        code, title = _HTTP_CODES.get(exc.status_code, ("HTTP_ERROR", "Request failed"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        return problem_response(
            exc.status_code, code, title, detail, headers=getattr(exc, "headers", None)
        )

    async def _store_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    for store_error in (RedisError, OSError, SQLAlchemyError):
        app.add_exception_handler(store_error, _store_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return error_response(exc)


def error_response(exc: Exception) -> Response:
    """The problem for any exception a handler raised: its own, 503 for a store, else 500."""
    if isinstance(exc, AppError):
        return app_error_response(exc)
    if isinstance(exc, RequestValidationError):
        return validation_response(exc)
    if isinstance(exc, RedisError | OSError | SQLAlchemyError):
        if isinstance(exc, RedisError | OSError) or is_unavailable(exc):
            log.warning("store unavailable: %s", type(exc).__name__)
            return problem_response(
                503,
                "SERVICE_UNAVAILABLE",
                "Service temporarily unavailable",
                "A backing store is not answering; try again shortly",
                headers={"Retry-After": "1"},
            )
        log.error("store error", exc_info=exc)
        return _internal()
    log.error("unhandled error", exc_info=exc)
    return _internal()


def _internal() -> Response:
    return problem_response(
        500, "INTERNAL_ERROR", "Internal error", "Something went wrong on our side"
    )
