"""Shared steps of the cluster tests: drops placed on chosen primaries, bursts, counts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app import metrics
from app.background.expiry_cluster import ClusterExpiryListener
from app.container import Container
from app.store import keys
from tests.cluster.conftest import ClusterApp
from tests.support.cluster import ClusterNode, LocalCluster
from tests.support.factories import auth, create_drop
from tests.support.realtime_server import wait_until

MAX_DROPS_TRIED = 60
SIGNUP_BATCH = 8


async def drops_on(
    client: httpx.AsyncClient,
    admin: str,
    cluster: LocalCluster,
    primaries: list[ClusterNode],
    per_primary: int = 1,
    **fields: Any,
) -> dict[int, list[str]]:
    """`per_primary` drops whose hash tag lands on each of `primaries` (by port).

    Drop ids are random, so drops are created until each primary has its share; the
    extra ones are cancelled so that they hold nothing.
    """
    wanted = {node.port: per_primary for node in primaries}
    placed: dict[int, list[str]] = {node.port: [] for node in primaries}
    for _ in range(MAX_DROPS_TRIED):
        if not any(wanted.values()):
            return placed
        drop = await create_drop(client, admin, **fields)
        owner = cluster.owner_of(keys.DropKeys(drop["id"]).drop).port
        if wanted.get(owner, 0) > 0:
            wanted[owner] -= 1
            placed[owner].append(drop["id"])
            continue
        response = await client.patch(
            f"/api/drops/{drop['id']}", json={"status": "cancelled"}, headers=auth(admin)
        )
        assert response.status_code == 200, response.text
    raise AssertionError(f"could not place drops on every primary: {placed}")


async def reserve(client: httpx.AsyncClient, drop_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))


async def purchase(client: httpx.AsyncClient, reservation_id: str, token: str) -> httpx.Response:
    return await client.post(f"/api/reservations/{reservation_id}/purchase", headers=auth(token))


async def tokens(container: Container, count: int, tag: str) -> list[str]:
    """`count` access tokens of fresh users (signed up through the service, not HTTP)."""
    sessions = []
    for first in range(0, count, SIGNUP_BATCH):  # the hasher bounds its queue
        sessions += await asyncio.gather(
            *(
                container.auth_service.signup(
                    f"{tag}-{i}@example.com", "correct-horse-battery", None
                )
                for i in range(first, min(first + SIGNUP_BATCH, count))
            )
        )
    return [session.access_token for session in sessions]


def expired_by(layer: str) -> float:
    return float(metrics.HOLDS_EXPIRED.labels(layer=layer)._value.get())


def app_listener(app: ClusterApp) -> ClusterExpiryListener:
    """The cluster expiry listener of an app."""
    listener = app.background.listener
    assert isinstance(listener, ClusterExpiryListener), type(listener)
    return listener


async def listening_on_every_primary(
    listener: ClusterExpiryListener, cluster: LocalCluster, within: float = 10.0
) -> None:
    """Wait until the listener has a live subscription on each current primary."""
    wanted = {(node.address.split(":")[0], node.port) for node in cluster.primary_nodes()}

    async def subscribed() -> bool:
        return wanted <= listener.subscribed_to

    await wait_until(subscribed, within, f"the expiry listener on every primary {wanted}")
