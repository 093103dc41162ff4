"""The Socket.IO manager's view of a cluster's nodes (app/store/cluster_nodes.py)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from app.store.cluster_nodes import live_node_addresses, node_url, url_address

NODES = """\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected
d4 127.0.0.1:7003@17003,node-d slave b2 0 1 2 connected
e5 :0@0 master,noaddr - 0 1 0 disconnected
f6 127.0.0.1:7005@17005 handshake - 0 1 0 connected
"""


class Answering:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def execute_command(self, *args: Any) -> Any:
        return self.answer


async def test_live_nodes_are_every_role_but_not_failing_or_unknown_ones() -> None:
    own = ("10.0.0.1", 7000)  # as the client reached it; `myself` stands for it
    found = await live_node_addresses(cast(Redis, Answering(NODES)), own)
    assert found == [own, ("127.0.0.1", 7001), ("127.0.0.1", 7003)]


async def test_live_nodes_from_redis_pys_parsed_answer() -> None:
    parsed = {
        "127.0.0.1:7000": {"flags": "myself,master"},
        "127.0.0.1:7001": {"flags": "slave"},
        "127.0.0.1:7002": {"flags": "master,fail?"},
    }
    found = await live_node_addresses(cast(Redis, Answering(parsed)), ("127.0.0.1", 7000))
    assert found == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]


def test_a_node_url_keeps_credentials_database_and_options() -> None:
    url = "redis://user:secret@10.0.0.1:7000/0?socket_keepalive=true"
    assert node_url(url, ("10.0.0.2", 7004)) == (
        "redis://user:secret@10.0.0.2:7004/0?socket_keepalive=true"
    )
    assert node_url("redis://h:1/0", ("::1", 7000)) == "redis://[::1]:7000/0"
    assert url_address(url) == ("10.0.0.1", 7000)
    assert url_address("redis://localhost/0") == ("localhost", 6379)
