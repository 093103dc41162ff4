"""Fixtures for store-fault tests: the test owns the store processes and may kill them.

`stores` is overridden here, so tests/conftest.py's `make_app` and `clean_slate` wire the
app to these servers: one PostgreSQL for the package (initdb costs seconds), a fresh
Valkey for each test (it is killed, emptied or rolled back).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.migrate import run_migrations
from tests.support.owned_stores import OwnedPostgres, OwnedValkey
from tests.support.stores import StoreUrls


@pytest.fixture(scope="package")
def owned_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sneakerdrop-faults-") as root:
        os.chmod(root, 0o755)  # the embedded PostgreSQL's own user must reach it (as root)
        yield Path(root)


@pytest.fixture(scope="package")
def owned_postgres(owned_root: Path) -> Iterator[OwnedPostgres]:
    postgres = OwnedPostgres(owned_root / "pg")
    try:
        postgres.start()
        run_migrations(postgres.url)
        yield postgres
    finally:
        postgres.stop()


@pytest.fixture
def owned_redis(tmp_path: Path) -> Iterator[OwnedValkey]:
    valkey = OwnedValkey(tmp_path)
    try:
        valkey.start()
        yield valkey
    finally:
        valkey.kill()


@pytest.fixture
def stores(owned_postgres: OwnedPostgres, owned_redis: OwnedValkey) -> Iterator[StoreUrls]:
    yield StoreUrls(owned_postgres.url, owned_redis.url)
    if not owned_postgres.running:  # a test that stopped it failed before its restart
        owned_postgres.restart()
