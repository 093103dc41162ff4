"""Schemathesis against the app's own OpenAPI document: as a customer, an admin, nobody.

Every operation gets generated requests, valid and invalid: schemathesis's coverage
cases (boundaries, each property's wrong types, missing and unknown fields, other
methods) plus a fixed number of fuzzed ones, derandomized so CI is stable. Every
response must be no server error, carry a documented status code and content type,
match the documented schema, and invalid input must be refused. Every operation that
declares the bearer scheme must refuse a request without its Authorization header
(401, missing_required_header), and an accepted request must be refused again without
the token and with a wrong one (ignored_auth).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.specs.openapi.checks import ignored_auth

from app.config import load_settings
from app.main import create_fastapi
from tests.contract.seed import LiveApi

MAX_EXAMPLES = 45  # fuzzed cases per operation and role, on top of the coverage cases
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "ignored_auth",
    "missing_required_header",
)
# The contract's ways to refuse a request: no token, not an admin, no such id, wrong
# method, body over 16 KiB, invalid. (A 5xx is not_a_server_error's to report.)
REFUSALS = ["401", "403", "404", "405", "413", "422", "5xx"]


def openapi_document() -> dict[str, Any]:
    """The document /openapi.json serves (test_served_document_is_the_tested_one checks).
    Built without stores; secrets given so no development secret file is written."""
    settings = load_settings(
        _env_file=None, env="test", jwt_access_secret="a" * 32, jwt_refresh_secret="b" * 32
    )
    document: dict[str, Any] = create_fastapi(settings, None).openapi()
    return document


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "checks": {
            "enabled": False,  # only those below; a check left out here is off
            **{name: {"enabled": True} for name in CHECKS},
            "negative_data_rejection": {"enabled": True, "expected-statuses": REFUSALS},
        },
    }
)
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
# (operation, role) pairs whose token ignored_auth has seen enforced: see test_api_conforms.
AUTH_ENFORCED: set[tuple[str, str]] = set()


@pytest.mark.parametrize("role", ["customer", "admin", "anonymous"])
@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_conforms(case: Case, role: str, live_api: LiveApi) -> None:
    aimed = live_api.seeds.aim(case)
    # ignored_auth resends each accepted request without a token and with a wrong one;
    # once an operation refused both for a role, it is not asked again (as schemathesis's
    # own runner does: enforcement is the operation's, not the input's).
    confirmed = (case.operation.label, role) in AUTH_ENFORCED
    response = aimed.call_and_validate(
        base_url=live_api.url,
        headers=live_api.seeds.headers(role),
        excluded_checks=[ignored_auth] if confirmed else None,
    )
    if 200 <= response.status_code < 300 and live_api.seeds.headers(role):
        AUTH_ENFORCED.add((case.operation.label, role))


def test_served_document_is_the_tested_one(live_api: LiveApi) -> None:
    response = httpx.get(f"{live_api.url}/openapi.json")
    assert response.status_code == 200
    assert response.json() == openapi_document()


@pytest.mark.parametrize("phase", ["coverage", "fuzzing"])
def test_every_check_is_on_in_every_phase(phase: str) -> None:
    """A config slip (a check's own section without `enabled`) silently turns it off."""
    checks = CONFIG.projects.get_default().checks_config_for(phase=phase)
    assert [name for name in CHECKS if not getattr(checks, name).enabled] == []
    assert checks.negative_data_rejection.expected_statuses == REFUSALS


def test_every_operation_that_needs_a_token_declares_the_bearer_scheme() -> None:
    """ignored_auth and missing_required_header test only what the schema declares: an
    operation answering 401 UNAUTHORIZED without `bearerAuth` would go unchecked.
    (/metrics is the operator's, behind METRICS_TOKEN when one is set, and public here.)"""
    document = openapi_document()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            refused = operation["responses"].get("401", {}).get("description", "")
            needs_token = "UNAUTHORIZED" in refused and path != "/metrics"
            declared = operation.get("security") == [{"bearerAuth": []}]
            assert declared == needs_token, (method, path)
