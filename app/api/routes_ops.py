"""Operations: liveness, readiness, Prometheus metrics, the small live page."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.responses import Response

from app.api import render
from app.api.deps import ContainerDep
from app.api.problems import problem_response
from app.api.responses import UNAVAILABLE, errors

router = APIRouter(tags=["operations"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/healthz")
async def healthz() -> Response:
    return render.JSONBody({"status": "ok"})


@router.get("/readyz", responses=errors(UNAVAILABLE))
async def readyz(container: ContainerDep) -> Response:
    postgres = await container.db.ping()
    try:
        redis = bool(await container.redis.ping())
    except Exception:
        redis = False
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


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> Response:
    return HTMLResponse(PAGE.read_text() if PAGE.exists() else "<h1>sneakerdrop</h1>")
