"""The Socket.IO pub/sub manager on Redis, within the worker's Redis connection budget.

python-socketio's AsyncRedisManager publishes through a client whose pool has no
bound (a burst of emits opened a connection each and kept it) and makes a new client
on every reconnect. `RedisManager` implements the pub/sub manager's two backend
hooks, `_publish` and `_listen`, on two clients of its own: a blocking pool for the
publishes (RedisBudget.socketio_publish) and one connection for the subscription
(RedisBudget.socketio_listener), reopened in place when lost.

On a Redis Cluster (REDIS_CLUSTER=true) classic PUBLISH/SUBSCRIBE is broadcast to
every node, primaries and replicas, so any live node serves both. The manager learns
the nodes (CLUSTER NODES, on each successful (re)subscribe) and, when its node stops
answering, moves both clients to another live node: the old clients are closed
before the new ones open, so the budget holds, and the subscription is back within
a connect's time of the node's death instead of waiting for that node to return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from socketio.async_pubsub_manager import AsyncPubSubManager

from app.runtime.socketio_fanout import SequentialFanOut
from app.store.client import REDIS_UNAVAILABLE, RedisBudget, create_redis
from app.store.cluster_nodes import Address, live_node_addresses, node_url, url_address

log = logging.getLogger(__name__)

LISTEN_SECONDS = 1.0  # one wait for a message; the subscription's health check runs between
MAX_BACKOFF_SECONDS = 5.0


class RedisManager(AsyncPubSubManager, SequentialFanOut):  # type: ignore[misc]
    """The pub/sub manager on two clients counted in RedisBudget, following a cluster's nodes."""

    name = "sneakerdrop-redis"

    def __init__(
        self,
        url: str,
        *,
        channel: str,
        budget: RedisBudget,
        timeout: float,
        write_only: bool = False,
        cluster: bool = False,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only)
        self.url = url
        self.budget = budget
        self.timeout = timeout
        self.cluster = cluster
        self.node: Address = url_address(url)
        self.nodes: list[Address] = [self.node]  # the cluster's live nodes, as last learnt
        self.moves = 0  # how often the clients moved to another node (a generation)
        self._moving = asyncio.Lock()
        self.publisher, self.listener = self._clients(url)

    def _clients(self, url: str) -> tuple[Redis, Redis]:
        publisher = create_redis(
            url, max_connections=self.budget.socketio_publish, timeout=self.timeout
        )
        listener = create_redis(
            url, max_connections=self.budget.socketio_listener, timeout=self.timeout
        )
        if self.cluster:
            # A dead node is left at once for another one, not retried three times
            # with backoff (redis-py's default) while pushes stop.
            for client in (publisher, listener):
                client.set_retry(Retry(NoBackoff(), 0))
        return publisher, listener

    async def _publish(self, data: Any) -> None:
        # As the library's: a publish that fails is logged, not raised to the emitter
        # (its local clients already have the event). On a cluster it is sent once more
        # through the node the clients moved to, so that the event is not lost.
        message = self.json.dumps(data)
        for attempt in range(2 if self.cluster else 1):
            moves = self.moves
            try:
                await self.publisher.publish(self.channel, message)
                return
            except (RedisError, OSError) as exc:
                log.warning("could not publish a Socket.IO event: %s", type(exc).__name__)
                if attempt or not isinstance(exc, REDIS_UNAVAILABLE):
                    return
                if not await self._move_from(moves):
                    return

    async def _listen(self) -> AsyncIterator[str]:
        backoff = 0.1
        while True:
            moves, listener = self.moves, self.listener
            try:
                if self.cluster:
                    # Before subscribing: a subscribed connection takes no other command,
                    # and the listener's pool holds one connection.
                    self.nodes = await live_node_addresses(listener, self.node) or self.nodes
                async with listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    backoff = 0.1
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_SECONDS)
                        if message and message.get("type") == "message":
                            yield str(message["data"])
            except (RedisError, OSError) as exc:
                # Leaving the `async with` closed the lost connection: the pool of one
                # reopens it, never a second one.
                log.warning("Socket.IO listener lost Redis: %s; retrying", type(exc).__name__)
                if (
                    self.cluster
                    and isinstance(exc, REDIS_UNAVAILABLE)
                    and await self._move_from(moves)
                ):
                    continue  # subscribe again at once, on the node moved to
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _move_from(self, moves: int) -> bool:
        """Move both clients off the node that failed, to the first other node that answers.

        `moves` is the generation the caller's failed command used: when the clients
        moved since (the other hook saw the failure first), nothing more is done. The
        replaced clients are closed before any new connection opens; the failed node is
        tried last. False when no node answered (the clients then stay on its address).
        """
        async with self._moving:
            if self.moves != moves:
                return True
            failed = self.node
            await self._close_clients()
            others = [node for node in self.nodes if node != failed]
            for candidate in [*others, failed]:
                url = node_url(self.url, candidate)
                self.publisher, self.listener = self._clients(url)
                try:
                    self.nodes = await live_node_addresses(self.listener, candidate) or self.nodes
                except (RedisError, OSError):
                    await self._close_clients()
                    continue
                self.node = candidate
                self.moves += 1
                log.warning(
                    "Socket.IO pub/sub moved from Redis node %s:%s to %s:%s", *failed, *candidate
                )
                return True
            self.publisher, self.listener = self._clients(node_url(self.url, failed))
            self.moves += 1
            return False

    async def _close_clients(self) -> None:
        for client in (self.listener, self.publisher):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def aclose(self) -> None:
        """Stop the listener and close both clients (python-socketio has no API for it)."""
        listener = getattr(self, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        await self._close_clients()
