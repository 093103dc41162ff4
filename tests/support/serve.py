"""One `sneakerdrop serve` (default workers) on the test stores, for the e2e tests.

`running_serve` starts it with the test settings plus the given environment, waits
for /readyz, and on the way out stops it and checks it exited cleanly with no
traceback in its log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.embedded.common import free_port
from tests.conftest import make_settings
from tests.support.factories import PASSWORD
from tests.support.realtime_server import (
    log_text,
    start_serve_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.stores import StoreUrls


def serve_env(stores: StoreUrls, data_dir: Path, admin_email: str) -> dict[str, str]:
    """The test settings as `sneakerdrop serve` reads them: environment variables."""
    settings = make_settings(stores)
    return {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": stores.redis_url,
        "JWT_ACCESS_SECRET": settings.jwt_access_secret or "",
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret or "",
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMITS": "off",
        "ADMIN_EMAIL": admin_email,
        "ADMIN_PASSWORD": PASSWORD,
        "DATA_DIR": str(data_dir),
        "RECONCILE_INTERVAL_SECONDS": "3600",
        # A long-poll a client left open holds a stop for the whole grace (python-engineio
        # answers it only at its next ping): 10 s a stop by default.
        "SHUTDOWN_GRACE_SECONDS": "2",
        "LOG_LEVEL": "WARNING",
        "ENV": "test",
    }


@asynccontextmanager
async def running_serve(
    stores: StoreUrls, tmp_path: Path, admin_email: str, **env: str
) -> AsyncIterator[str]:
    """The base URL of a ready `sneakerdrop serve`; `env` overrides the test settings."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    environment = {**serve_env(stores, tmp_path / "data", admin_email), **env}
    process = await start_serve_process(port, environment, log)
    try:
        await wait_ready(process, url, log)
        yield url
    finally:
        codes = await stop_serve_processes([process])
    text = log_text(log)
    assert codes == [0], text[-2000:]
    assert "Traceback" not in text, text[-4000:]
