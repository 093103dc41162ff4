"""Pure ASGI middleware: request id and access log, metrics, body size limit, headers.

Written as plain ASGI (not BaseHTTPMiddleware) to keep the per-request cost low.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException

from app import metrics
from app.api.problems import problem_body
from app.logs import request_id_var
from app.runtime.randomness import token_hex

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 16 * 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

access_log = logging.getLogger("sneakerdrop.access")

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # older browsers; the CSP below is the modern form
]
# Every response's CSP, unless the response brings its own (the page: see routes_ops).
_DEFAULT_CSP = (b"content-security-policy", b"frame-ancestors 'none'")


class _BodyTooLarge(HTTPException):
    """Raised while the app reads a streamed body past the limit. An HTTPException, so
    FastAPI's body parsing lets it through to the problem handler as a 413."""

    def __init__(self) -> None:
        super().__init__(413, f"Request bodies are limited to {MAX_BODY_BYTES} bytes")


class RequestContextMiddleware:
    """X-Request-ID, 413 for large bodies (declared or streamed), metrics and access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = [500]
        started_response = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(_SECURITY_HEADERS)
                if not any(name == _DEFAULT_CSP[0] for name, _ in headers):
                    headers.append(_DEFAULT_CSP)
                if scope["path"].startswith("/api/auth"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        received = [0]

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            return message

        try:
            if _declared_length(scope) > MAX_BODY_BYTES:
                await _send_413(send_wrapper)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge:
            if not started_response[0]:
                await _send_413(send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            count, latency = _request_metrics(method, route_path, status_holder[0])
            count.inc()
            latency.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status_holder[0],
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


@functools.lru_cache(maxsize=1024)
def _request_metrics(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The labelled children, looked up once per route and status, not per request."""
    return (
        metrics.REQUESTS.labels(method, route, str(status)),
        metrics.REQUEST_LATENCY.labels(method, route),
    )


def request_id_of(scope: Scope) -> str:
    """The request's X-Request-ID when it is a sane one, else a new random id."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _REQUEST_ID_RE.match(candidate):
                return candidate
            break
    return token_hex(8)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _send_413(send: Send) -> None:
    body = problem_body(
        413,
        "PAYLOAD_TOO_LARGE",
        "Request body too large",
        f"Request bodies are limited to {MAX_BODY_BYTES} bytes",
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
