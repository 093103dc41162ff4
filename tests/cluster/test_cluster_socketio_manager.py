"""The Socket.IO manager's move to another cluster node keeps within its connection budget.

RedisManager (app/store/socketio_manager.py) learns the cluster's nodes when it
subscribes and, when its node fails, closes its two clients before opening new ones
on another node. Here the move is asked for directly (no node is killed: the kill is
tests/cluster/test_cluster_realtime_failover.py), and the connections each node
holds are counted with CLIENT LIST before, during and after.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from app.store.client import RedisBudget
from app.store.socketio_manager import RedisManager
from tests.support.cluster import ClusterNode, LocalCluster
from tests.support.realtime_server import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

CHANNEL = "sneakerdrop:test:socketio-manager"


async def connections(node: ClusterNode) -> int:
    """Client connections `node` holds, this count's own left out."""
    client = Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        return len(await client.client_list()) - 1
    finally:
        await client.aclose()


async def subscribed(node: ClusterNode) -> int:
    client = Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        [(_, count)] = await client.pubsub_numsub(CHANNEL)  # type: ignore[no-untyped-call]
        return int(count)
    finally:
        await client.aclose()


async def test_a_move_closes_the_old_clients_before_the_new_ones_open(
    redis_cluster: LocalCluster,
) -> None:
    nodes = redis_cluster.live_nodes()
    first = nodes[1]
    budget = RedisBudget.split(50)
    allowed = budget.socketio_listener + budget.socketio_publish
    manager = RedisManager(
        f"redis://{first.address}/0", channel=CHANNEL, budget=budget, timeout=2.0, cluster=True
    )
    before = {node.port: await connections(node) for node in nodes}

    async def extra() -> dict[int, int]:
        return {n.port: await connections(n) - before[n.port] for n in nodes}

    listen = manager._listen()
    try:
        received = asyncio.ensure_future(anext(listen))

        async def on(node: ClusterNode) -> bool:
            return await subscribed(node) == 1

        await wait_until(lambda: on(first), 10, "the manager subscribed on its URL's node")
        await manager._publish({"n": 1})
        assert json.loads(await asyncio.wait_for(received, 10)) == {"n": 1}
        assert sorted(port for _, port in manager.nodes) == sorted(n.port for n in nodes)
        using = await extra()
        assert 1 <= using[first.port] <= allowed, using
        assert sum(using.values()) == using[first.port], using

        received = asyncio.ensure_future(anext(listen))
        assert await manager._move_from(manager.moves)
        second = next(n for n in nodes if n.port == manager.node[1])
        assert second is not first
        await wait_until(lambda: on(second), 10, "the manager subscribed on another node")
        await manager._publish({"n": 2})
        assert json.loads(await asyncio.wait_for(received, 10)) == {"n": 2}
        moved = await extra()
        assert moved[first.port] == 0, moved  # the replaced clients are closed
        assert 1 <= moved[second.port] <= allowed, moved
        assert sum(moved.values()) == moved[second.port], moved
    finally:
        await listen.aclose()
        await manager.aclose()

    async def all_closed() -> bool:
        return not any((await extra()).values())

    await wait_until(all_closed, 5, "every connection of the manager closed")
