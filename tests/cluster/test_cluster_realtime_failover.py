"""Pushes between processes survive the death of the cluster node the Socket.IO manager used.

Two `sneakerdrop serve` with REDIS_CLUSTER=true, both with REDIS_URL on one primary, a
Socket.IO client on each. That primary is SIGKILLed: every worker's manager must move
its subscription and its publishes to another live node (classic pub/sub reaches every
node), so that a reserve through either process still reaches the client of the other.
Without the move, the managers keep retrying the dead node and no push crosses.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.background.broadcaster import LEASE_TTL_SECONDS as BROADCAST_LEASE_SECONDS
from app.embedded.common import free_port
from app.store.channels import database_of_url, socketio_channel
from tests.cluster.test_cluster_realtime import ready
from tests.conftest import make_settings
from tests.support.cluster import ClusterNode, LocalCluster
from tests.support.factories import PASSWORD, auth, create_drop, signup
from tests.support.realtime_server import (
    listening,
    log_text,
    start_serve_process,
    stop_serve_processes,
    wait_until,
)
from tests.support.stores import StoreUrls

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

ADMIN_EMAIL = "cluster-rt-failover-admin@example.com"
RESUBSCRIBED_WITHIN = 2.5  # s from the SIGKILL until every worker listens again
# s from a reserve to the other process's client. The first push after the failover
# also waits for the broadcaster: when its lease or its stock-dirty subscription was on
# the killed node, it leads again only once the lease is free (BROADCASTER lease 5 s)
# and the promoted replica answers; it then pushes every drop still marked dirty.
PUSH_WITHIN = BROADCAST_LEASE_SECONDS + 7.0


async def subscribers(nodes: list[ClusterNode], channel: str) -> int:
    """Subscriptions to `channel` on `nodes` together (PUBSUB NUMSUB is per node)."""
    total = 0
    for node in nodes:
        client = Redis(host="127.0.0.1", port=node.port, socket_timeout=1)
        try:
            [(_, count)] = await client.pubsub_numsub(channel)  # type: ignore[no-untyped-call]
            total += int(count)
        except (RedisError, OSError):
            pass
        finally:
            await client.aclose()
    return total


async def reserve_through(http: httpx.AsyncClient, drop_id: str, token: str) -> None:
    """Reserve, retried while the cluster client is still learning the new primary."""
    deadline = time.monotonic() + PUSH_WITHIN
    while True:
        response = await http.post(f"/api/drops/{drop_id}/reserve", headers=auth(token))
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 201, response.text
            return
        await asyncio.sleep(0.2)


@pytest.mark.xfail(
    strict=False,
    reason="known gap: in 2 of 4 fresh-clone runs no push crossed processes within 12 s"
    " after the REDIS_URL node was SIGKILLed, though every worker had resubscribed;"
    " the cause is not found yet (docs/RELIABILITY.md, Limits)",
)
async def test_pushes_cross_processes_after_the_redis_url_node_dies(
    stores: StoreUrls, redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    victim = next(n for n in redis_cluster.primary_nodes() if n is not redis_cluster.nodes[0])
    url = f"redis://{victim.address}/0"
    channel = socketio_channel(database_of_url(url))
    settings = make_settings(stores)
    env = {
        "DATABASE_URL": stores.database_url,
        "REDIS_URL": url,
        "REDIS_CLUSTER": "true",
        "JWT_ACCESS_SECRET": settings.jwt_access_secret or "",
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret or "",
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMITS": "off",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": PASSWORD,
        "DATA_DIR": str(tmp_path / "data"),
        "STOCK_BROADCAST_INTERVAL_MS": "50",
        "RECONCILE_INTERVAL_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
        "ENV": "test",
    }
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    logs = [tmp_path / f"serve-{name}.log" for name in ("a", "b")]
    processes: list[asyncio.subprocess.Process] = []
    killed = False
    try:
        for port, log in zip(ports, logs, strict=True):
            processes.append(await start_serve_process(port, env, log))
        await asyncio.gather(
            *(ready(p, u, g) for p, u, g in zip(processes, urls, logs, strict=True))
        )
        async with (
            httpx.AsyncClient(base_url=urls[0], timeout=10) as http_a,
            httpx.AsyncClient(base_url=urls[1], timeout=10) as http_b,
        ):
            login = await http_a.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            drop = (await create_drop(http_a, login.json()["accessToken"], totalStock=10))["id"]
            first, second = await signup(http_a), await signup(http_b)
            async with listening(urls[0]) as on_a, listening(urls[1]) as on_b:
                for client in (on_a, on_b):
                    await client.wait_for(drop, 10)

                # A worker subscribes once it has had a client (python-socketio starts
                # its manager's listener then): at least one worker of each process.
                async def both_on_victim() -> bool:
                    return await subscribers([victim], channel) >= 2

                await wait_until(both_on_victim, 10, "the workers subscribed on the victim")
                listening_workers = await subscribers([victim], channel)
                others = [n for n in redis_cluster.nodes if n is not victim]
                resubscribed: list[float] = []

                async def moved() -> bool:
                    return await subscribers(others, channel) >= listening_workers

                async def watch() -> None:
                    await wait_until(moved, 10, "every listening worker on another node")
                    resubscribed.append(time.monotonic())

                watcher = asyncio.create_task(watch())
                killed_at = time.monotonic()
                killed = True
                failover = await asyncio.to_thread(redis_cluster.kill_primary, victim)
                await asyncio.wait_for(watcher, 10)
                moved_after = resubscribed[0] - killed_at
                print(
                    f"\nevery worker resubscribed {moved_after:.2f} s after the SIGKILL"
                    f" (replica promoted after {failover.seconds:.2f} s)"
                )
                assert moved_after <= RESUBSCRIBED_WITHIN

                await reserve_through(http_a, drop, first["accessToken"])
                await on_b.wait_for(drop, 9, PUSH_WITHIN)
                await on_a.wait_for(drop, 9, PUSH_WITHIN)
                await reserve_through(http_b, drop, second["accessToken"])
                await on_a.wait_for(drop, 8, PUSH_WITHIN)
                await on_b.wait_for(drop, 8, PUSH_WITHIN)
    finally:
        codes = await stop_serve_processes(processes)
        if killed:
            await asyncio.to_thread(redis_cluster.restart, victim)
    assert codes == [0, 0], [log_text(log)[-2000:] for log in logs]
