"""A Redis Cluster's primaries, and a plain client to each, for node-local work.

Some things a cluster does per node, not per slot: a keyspace notification is
published only by the node whose key expired. A listener therefore needs one
connection to every primary, and must notice when the primaries change (a replica
promoted after a failover, a node added). redis-py's cluster client learns the
topology only when a command it routes fails, so `ClusterNodes.primaries` asks the
cluster itself (CLUSTER SLOTS) each time it is called.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

Address = tuple[str, int]

# Connection options copied from the cluster client to each node client.
_COPIED_OPTIONS = ("username", "password", "client_name")


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


class ClusterNodes:
    """Plain clients to a cluster's nodes, one per address, created on first use."""

    def __init__(self, cluster: RedisCluster, timeout: float = 1.0) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._clients: dict[Address, Redis] = {}
        self._last: list[Address] = []

    def client(self, address: Address) -> Redis:
        found = self._clients.get(address)
        if found is None:
            given = self.cluster.get_connection_kwargs()
            options: dict[str, Any] = {
                name: given[name] for name in _COPIED_OPTIONS if given.get(name)
            }
            found = Redis(
                host=address[0],
                port=address[1],
                decode_responses=True,
                # Bounded so that a dead node is passed over quickly; a subscriber's
                # reads wait with their own timeout (pubsub.get_message).
                socket_connect_timeout=self.timeout,
                socket_timeout=max(self.timeout, 5.0),
                **options,
            )
            self._clients[address] = found
        return found

    async def primaries(self) -> list[Address] | None:
        """The primaries that serve slots, as the first node that answers sees them.

        Asks the primaries found last time first, then every node redis-py knows of
        (replicas included: one of them may be the new primary). None when no node
        answers.
        """
        known = [(node.host, int(node.port)) for node in self.cluster.get_nodes()]
        for address in dict.fromkeys([*self._last, *known]):
            try:
                slots = await self.client(address).execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER SLOTS"
                )
            except (RedisError, OSError):
                continue
            found = sorted(
                {(str(primary[0]) or address[0], int(primary[1])) for _, _, primary, *_ in slots}
            )
            if found:
                self._last = found
                return found
        return None

    async def forget(self, address: Address) -> None:
        """Close the client of a node that left (or stopped being a primary)."""
        client = self._clients.pop(address, None)
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def aclose(self) -> None:
        for address in list(self._clients):
            await self.forget(address)


# CLUSTER NODES flags of a node that must not be used: failing, or not yet known.
_UNUSABLE = frozenset({"fail", "fail?", "noaddr", "handshake"})


async def live_node_addresses(node: Redis, own: Address) -> list[Address]:
    """Every node of the cluster, primaries and replicas, that `node` does not see failing.

    Classic PUBLISH/SUBSCRIBE is broadcast to all of them, so any one serves a
    subscriber. `own` is `node`'s address, for the line that leaves its own blank.
    """
    answer = await node.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    # redis-py parses the answer into {"host:port": {"flags": ...}}; the raw text otherwise.
    if isinstance(answer, dict):
        lines = [(str(addr), str(info.get("flags", ""))) for addr, info in answer.items()]
    else:
        lines = [
            (p[1], p[2]) for p in (line.split() for line in str(answer).splitlines()) if len(p) > 2
        ]
    found: list[Address] = []
    for addr, flags in lines:
        flag_set = set(flags.split(","))
        if _UNUSABLE & flag_set:
            continue
        host, _, port = addr.split("@")[0].split(",")[0].rpartition(":")
        if "myself" in flag_set:
            found.append(own)
        elif host and port.isdigit() and int(port) > 0:
            found.append((host.strip("[]"), int(port)))
    return list(dict.fromkeys(found))


def node_url(url: str, address: Address) -> str:
    """`url` (credentials, database, options kept) pointed at another node."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    netloc = f"{credentials}@{host}:{address[1]}" if credentials else f"{host}:{address[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def url_address(url: str) -> Address:
    """The node a `redis://` URL names."""
    parts = urlsplit(url)
    return (parts.hostname or "localhost", parts.port or 6379)
