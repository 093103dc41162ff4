"""The expiry listener on a Redis Cluster: one subscription per primary, following failovers.

A timer key's `expired` event is published by the node that holds the key and by no
other, so a listener on one node hears a third of the holds of a 3-primary cluster.
This listener subscribes on every primary (the plain per-node loop of
`ExpiryListener._listen`) and asks the cluster for its primaries every
REFRESH_SECONDS: a replica promoted after a failover is subscribed within about that
time, and a node that stopped being a primary is let go. The release itself goes
through the cluster client, to whichever node owns the hold's slot now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app import metrics
from app.background.expiry import ExpiryListener
from app.background.stopping import pause
from app.store.cluster_nodes import Address, ClusterNodes, is_cluster
from app.store.holds import HoldStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 0.5


class ClusterExpiryListener(ExpiryListener):
    def __init__(
        self,
        hold_store: HoldStore,
        nodes: ClusterNodes,
        stopping: asyncio.Event | None = None,
        hold_lifetime_ms: int = 0,
    ) -> None:
        super().__init__(hold_store, list, stopping, hold_lifetime_ms)
        self.nodes = nodes
        self._tasks: dict[Address, asyncio.Task[None]] = {}
        self.subscribed_to: set[Address] = set()  # primaries with a live subscription

    async def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    primaries = await self.nodes.primaries()
                except (RedisError, OSError):
                    primaries = None
                if primaries is None:
                    metrics.BACKGROUND_ERRORS.labels(task="expiry").inc()
                else:
                    await self._follow(primaries)
                await pause(self.stopping, REFRESH_SECONDS)
        finally:
            for address in list(self._tasks):
                await self._drop(address)
            await self.nodes.aclose()

    async def _follow(self, primaries: list[Address]) -> None:
        wanted = set(primaries)
        for address in set(self._tasks) - wanted:
            log.info("expiry listener leaves %s:%d (no longer a primary)", *address)
            await self._drop(address)
        first = not self._tasks
        for address in wanted - set(self._tasks):
            if not first:
                log.info("expiry listener joins %s:%d (a new primary)", *address)
            node = self.nodes.client(address)
            self._tasks[address] = asyncio.create_task(
                self._listen(node), name=f"expiry-{address[0]}:{address[1]}"
            )

    async def _drop(self, address: Address) -> None:
        task = self._tasks.pop(address, None)
        self.subscribed_to.discard(address)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.nodes.forget(address)

    async def _reload_guard(self, node: Redis) -> tuple[int, float]:
        """Called on each (re)subscribe of a node: records the node as listened to."""
        guard = await super()._reload_guard(node)
        kwargs = node.connection_pool.connection_kwargs
        self.subscribed_to.add((str(kwargs["host"]), int(kwargs["port"])))
        return guard


def expiry_listener(
    hold_store: HoldStore, redis: Redis, stopping: asyncio.Event, hold_lifetime_ms: int
) -> ExpiryListener:
    """The listener for this Redis: per primary on a cluster, else on the one server."""
    if is_cluster(redis):
        nodes = ClusterNodes(redis)  # type: ignore[arg-type]
        return ClusterExpiryListener(hold_store, nodes, stopping, hold_lifetime_ms)
    return ExpiryListener(hold_store, lambda: [redis], stopping, hold_lifetime_ms)
