"""A live server per test, on the real stores, with seeded accounts, drops and holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import make_settings
from tests.contract.seed import ADMIN_EMAIL, PASSWORD, LiveApi, seed
from tests.contract.server import serve_in_thread
from tests.support.stores import StoreUrls


@pytest.fixture
def live_api(stores: StoreUrls) -> Iterator[LiveApi]:
    """Started after `clean_slate` emptied the stores; stopped when the test ends."""
    settings = make_settings(stores, admin_email=ADMIN_EMAIL, admin_password=PASSWORD)
    with serve_in_thread(settings) as url:
        yield LiveApi(url, seed(url))
