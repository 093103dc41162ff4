"""Bad ids and out-of-range dates against a real `sneakerdrop serve` (default workers).

Through uvicorn and its workers a trailing newline in an id (`%0A`) is a 404 problem on
both reserve entry points, the keep-alive connection stays usable (the Idempotency-Key
route used to drop it), and an admin's date outside the representable range is a 422.
No request leaves a traceback in the server's log.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.embedded.common import free_port
from tests.support.factories import PASSWORD, auth, create_drop, signup
from tests.support.realtime_server import (
    log_text,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(90)

ADMIN_EMAIL = "bad-input-admin@example.com"


def _env(stores: StoreUrls, data_dir: Path) -> dict[str, str]:
    return {
        **serve_env(stores, data_dir, ADMIN_EMAIL),
    }


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


async def test_newline_ids_and_extreme_dates_are_4xx_on_a_real_server(
    stores: StoreUrls, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    process = await start_serve_process(port, _env(stores, tmp_path / "data"), log)
    try:
        await wait_ready(process, url, log)
        # One connection: a dropped one would fail the requests after it.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
            login = await http.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin = login.json()["accessToken"]
            drop = (await create_drop(http, admin, totalStock=3))["id"]
            user = auth((await signup(http))["accessToken"])

            for bad in (f"{drop}%0A", "0123456789abcdef%0A", f"{drop}%0D%0A"):
                for headers in (user, {**user, "Idempotency-Key": "nl-1"}):
                    response = await http.post(f"/api/drops/{bad}/reserve", headers=headers)
                    assert_problem(response, 404, "DROP_NOT_FOUND")
                assert_problem(await http.get(f"/api/drops/{bad}"), 404, "DROP_NOT_FOUND")
                hold = f"{bad}.0123456789abcdef.0123456789abcdef%0A"
                response = await http.post(f"/api/reservations/{hold}/purchase", headers=user)
                assert_problem(response, 404, "RESERVATION_NOT_FOUND")

            for field, when in (
                ("startsAt", "0001-01-01T00:00:00+14:00"),
                ("endsAt", "9999-12-31T23:59:59-14:00"),
                ("startsAt", "9999-12-31T23:59:59-14:00"),
            ):
                body = {"name": "Edge", "priceCents": 100, "totalStock": 1, field: when}
                created = await http.post("/api/drops", json=body, headers=auth(admin))
                assert_problem(created, 422, "VALIDATION_ERROR")
                patched = await http.patch(
                    f"/api/drops/{drop}", json={field: when}, headers=auth(admin)
                )
                assert_problem(patched, 422, "VALIDATION_ERROR")

            # The drop behind the mangled ids is untouched, and the connection still works.
            held = await http.post(f"/api/drops/{drop}/reserve", headers=user)
            assert held.status_code == 201, held.text
            view = (await http.get(f"/api/drops/{drop}")).json()
            assert (view["availableStock"], view["activeReservations"]) == (2, 1)
    finally:
        codes = await stop_serve_processes([process])
    text = log_text(log)
    assert codes == [0], text[-2000:]
    assert "Traceback" not in text, text[-4000:]
