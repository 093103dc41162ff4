"""OpenAPI `responses=` entries, so the schema lists every error a route gives."""

from __future__ import annotations

from typing import Any

from app.api.schemas import Problem


def errors(*pairs: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """{status: {model, description}} for the given (status, codes) pairs."""
    merged: dict[int, list[str]] = {}
    for status, codes in pairs:
        merged.setdefault(status, []).append(codes)
    return {
        status: {
            "model": Problem,
            "description": " | ".join(codes),
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        }
        for status, codes in merged.items()
    }


VALIDATION = (422, "VALIDATION_ERROR")
UNAUTHORIZED = (401, "UNAUTHORIZED")
FORBIDDEN = (403, "FORBIDDEN")
TOO_LARGE = (413, "PAYLOAD_TOO_LARGE")
RATE_LIMITED = (429, "RATE_LIMITED")
UNAVAILABLE = (503, "SERVICE_UNAVAILABLE")
IDEMPOTENCY = (422, "IDEMPOTENCY_KEY_REUSED")
