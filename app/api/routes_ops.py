"""Operations: liveness, readiness, Prometheus metrics, the storefront and console pages."""

from __future__ import annotations

import functools
import hmac
import os
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.responses import Response

from app.api import render
from app.api.deps import ContainerDep, parse_bearer
from app.api.problems import problem_response
from app.api.responses import UNAUTHORIZED, UNAVAILABLE, errors
from app.errors import NotFound, Unauthorized
from app.store.client import answers

router = APIRouter(tags=["operations"])
STATIC = Path(__file__).resolve().parent.parent / "static"
PAGE = STATIC / "index.html"
ADMIN_PAGE = STATIC / "admin.html"
# The files the pages load, served by the API itself: the pages work without internet
# access, and their CSP can allow 'self' alone. Plain ES modules, no build step.
_JS = "text/javascript; charset=utf-8"
ASSETS = {
    "app.js": _JS,  # the storefront (/)
    "admin.js": _JS,  # the operator console (/admin)
    "session.js": _JS,  # sign-in, silent refresh, the API client (both pages)
    "ui.js": _JS,  # formatting and error messages (both pages)
    "chart.js": _JS,  # the console's live chart (canvas)
    "fairness.js": _JS,  # hmac-sha256-v1 recomputed in the browser (WebCrypto)
    "app.css": "text/css; charset=utf-8",
    "socket.io.min.js": _JS,
}
_HOST_RE = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@router.get("/healthz")
async def healthz() -> Response:
    return render.JSONBody({"status": "ok"})


@router.get("/readyz", responses=errors(UNAVAILABLE))
async def readyz(container: ContainerDep) -> Response:
    postgres = await container.db.ping()
    redis = await answers(container.redis)
    if postgres and redis:
        return render.JSONBody({"status": "ok", "postgres": True, "redis": True})
    down = " and ".join(name for name, up in (("PostgreSQL", postgres), ("Redis", redis)) if not up)
    return problem_response(
        503,
        "SERVICE_UNAVAILABLE",
        "Service temporarily unavailable",
        f"{down} not answering",
        # No "status" here: in problem+json it is the HTTP status (503), not a word.
        extra={"postgres": postgres, "redis": redis},
        headers={"Retry-After": "1"},
    )


@router.get("/metrics", response_class=Response, responses=errors(UNAUTHORIZED))
async def metrics(request: Request, container: ContainerDep) -> Response:
    """With METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` reads the
    metrics: they name every drop and show the traffic."""
    expected = container.settings.metrics_token
    if expected:
        presented = parse_bearer(request.headers.get("authorization", ""))
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise Unauthorized("A valid metrics token is required")
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request) -> Response:
    page = _read(PAGE) if PAGE.exists() else b"<h1>sneakerdrop</h1>"
    return HTMLResponse(
        page, headers={"Content-Security-Policy": page_policy(request.headers.get("host", ""))}
    )


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin_page(request: Request) -> Response:
    """The operator console. The page is public (it holds no private state); its data
    comes from the admin JSON routes, which refuse anyone but an admin."""
    return HTMLResponse(
        _read(ADMIN_PAGE),
        headers={"Content-Security-Policy": page_policy(request.headers.get("host", ""))},
    )


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound("No such file")
    return Response(_read(STATIC / name), media_type=media_type)


def page_policy(host: str) -> str:
    """The page's CSP: everything from this origin only; no inline script or style.

    'self' covers same-origin WebSockets in CSP Level 3 browsers; older ones need the
    ws/wss origin spelled out, taken from a Host that is a plain host[:port] (anything
    else would let a crafted Host write into the policy)."""
    connect = "'self'"
    if _HOST_RE.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


@functools.cache
def _read(path: Path) -> bytes:
    """Package files do not change while the process runs: read each once."""
    return path.read_bytes()
