"""One rig (three API hosts in network namespaces behind HAProxy) for the package.

Starting it costs about half a minute (a PostgreSQL initdb, three servers), so every
test shares it; each test makes its own drops and users and heals what it cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.rig import Rig, running_rig


@pytest.fixture(scope="package")
def rig() -> Iterator[Rig]:
    if os.geteuid() != 0:
        pytest.skip("the rig creates network namespaces and runs iptables: it needs root")
    with running_rig() as started:
        yield started
