"""Several API hosts behind HAProxy, each in its own network namespace, for partition tests.

The rig owns everything it starts (tests/support/rig_network.py draws the network):
- PostgreSQL and Valkey outside the namespaces, listening on 127.0.0.1 (for the test)
  and on the bridge address 10.213.N.1 (for the hosts). The machine's own stores listen
  on loopback only, which a namespace cannot reach, hence stores of the rig's own.
- Per host, `sneakerdrop serve --workers 1` inside `ip netns exec`, HOST = its address,
  ENV=production with the same secrets, REDIS_TIMEOUT_SECONDS=1.
- HAProxy from Debian with deploy/haproxy.cfg, the file docker-compose.yml mounts; the
  rig fills in the addresses through the environment variables the file expands.
A partition is iptables inside one namespace: packets to and from the Redis port are
dropped, so the host's Redis connections hang as they would behind a dead link.
`close()` removes it all, also after a failed start or test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from app.db.migrate import run_migrations
from app.embedded.common import _valkey_server_bin, free_port
from app.embedded.valkey import server_options
from app.store import keys
from tests.support.owned_stores import OwnedPostgres
from tests.support.rig_network import Network, ensure_tools, sh
from tests.support.stores import StoreUrls

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
HOSTS = 3
API_PORT = 4000
START_SECONDS = 60.0
REDIS_TIMEOUT_SECONDS = 1.0
RESERVATION_TTL_SECONDS = 3
ADMIN_EMAIL = "admin@rig.example.com"
ADMIN_PASSWORD = "rig-admin-password"
SECRETS = {
    "JWT_ACCESS_SECRET": "rig-access-secret-" + "a" * 40,
    "JWT_REFRESH_SECRET": "rig-refresh-secret-" + "b" * 40,
    "METRICS_TOKEN": "rig-metrics-token",
}


@dataclass(eq=False)  # one object per host: compared and hashed by identity
class Host:
    index: int
    name: str  # the server name in haproxy.cfg: api1..api3
    address: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.address}:{API_PORT}"


@dataclass
class Rig:
    root: Path
    network: Network
    postgres: OwnedPostgres
    valkey: subprocess.Popen[bytes] | None = None
    valkey_port: int = 0
    haproxy: subprocess.Popen[bytes] | None = None
    lb_port: int = 0
    hosts: list[Host] = field(default_factory=list)
    cut: set[int] = field(default_factory=set)

    # -- addresses ------------------------------------------------------------------

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def stores(self) -> StoreUrls:
        """The stores as the test (root namespace, loopback) reaches them."""
        return StoreUrls(self.postgres.url, f"redis://127.0.0.1:{self.valkey_port}/0")

    @property
    def stats_socket(self) -> Path:
        return self.root / "haproxy.sock"

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.valkey_port, socket_timeout=5, decode_responses=True)

    # -- start ----------------------------------------------------------------------

    def _start_stores(self) -> None:
        bridge = self.network.bridge_ip
        self.postgres.start()  # on loopback: initdb, the database
        self.postgres.stop()
        server = self.postgres.server
        with (server.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {bridge}/24 trust\n")
        options = f"-h 127.0.0.1,{bridge} -p {self.postgres.port} -k ''"
        server.launched = True
        server._run(
            [*server._pg_ctl(), "-l", str(server.logfile), "-o", options, "start"],
            timeout=server.timeout + 5,
        )
        run_migrations(self.postgres.url)
        self.valkey_port = free_port()
        folder = self.root / "valkey"
        folder.mkdir()
        argv = [
            str(_valkey_server_bin()),
            *server_options(self.valkey_port, folder, self.root / "valkey.log"),
            # Later options win: the hosts reach it on the bridge, which has no password.
            *("--bind", "127.0.0.1", bridge, "--protected-mode", "no"),
        ]
        self.valkey = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: _pings(self), START_SECONDS, "valkey")

    def _host_env(self, index: int) -> dict[str, str]:
        bridge = self.network.bridge_ip
        return {
            **os.environ,
            **SECRETS,
            "PYTHONPATH": str(ROOT),
            "ENV": "production",
            "HOST": self.network.address(index),
            "PORT": str(API_PORT),
            "DATABASE_URL": self.postgres.url.replace("127.0.0.1", bridge),
            "REDIS_URL": f"redis://{bridge}:{self.valkey_port}/0",
            "DATA_DIR": str(self.root / f"api{index}"),
            "REDIS_TIMEOUT_SECONDS": str(REDIS_TIMEOUT_SECONDS),
            "RESERVATION_TTL_SECONDS": str(RESERVATION_TTL_SECONDS),
            "RATE_LIMITS": "off",
            "RESERVE_COOLDOWN_SECONDS": "0",
            "TRUSTED_PROXIES": bridge,
            "LOG_LEVEL": "INFO",
            # One host creates the admin account: three at once would race on its row.
            **(
                {"ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD} if index == 1 else {}
            ),
        }

    def _start_host(self, index: int) -> Host:
        log = self.root / f"api{index}.log"
        argv = self.network.in_netns(
            index, sys.executable, "-m", "app.cli", "serve", "--workers", "1"
        )
        with log.open("wb") as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.root,  # no stray .env
                env=self._host_env(index),
                start_new_session=True,
            )
        return Host(index, f"api{index}", self.network.address(index), process, log)

    def _start_haproxy(self) -> None:
        self.lb_port = free_port()
        env = {
            **os.environ,
            "LB_BIND": f"127.0.0.1:{self.lb_port}",
            "HAPROXY_STATS_SOCKET": str(self.stats_socket),
            **{f"API{h.index}_ADDR": f"{h.address}:{API_PORT}" for h in self.hosts},
        }
        log = (self.root / "haproxy.log").open("wb")
        with log:
            self.haproxy = subprocess.Popen(
                ["haproxy", "-W", "-db", "-f", str(HAPROXY_CFG)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def start(self) -> None:
        self._start_stores()
        self.hosts = [self._start_host(i) for i in range(1, HOSTS + 1)]
        for host in self.hosts:
            _wait(lambda h=host: _ready(h), START_SECONDS, f"{host.name} /readyz")  # type: ignore[misc]
        self._start_haproxy()
        _wait(self._all_up, 20, "every server UP in HAProxy")

    def _all_up(self) -> bool:
        assert self.haproxy is not None
        if self.haproxy.poll() is not None:
            raise RuntimeError(f"haproxy exited:\n{(self.root / 'haproxy.log').read_text()}")
        try:
            return set(self.server_states().values()) == {"UP"}
        except OSError:  # its stats socket is not there yet
            return False

    # -- observe --------------------------------------------------------------------

    def haproxy_command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(self.stats_socket))
            conn.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_stats(self) -> dict[str, dict[str, str]]:
        """`show stat` of the api_hosts backend's servers, by server name."""
        lines = self.haproxy_command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row
            for row in rows
            if row.get("pxname") == "api_hosts" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def server_states(self) -> dict[str, str]:
        """UP / DOWN (or a transition such as `UP 1/2`) of each server."""
        return {name: row["status"] for name, row in self.server_stats().items()}

    def requests_served(self) -> dict[str, int]:
        """Requests HAProxy sent to each server so far (its `stot`)."""
        return {name: int(row["stot"]) for name, row in self.server_stats().items()}

    def lease_holder(self, lease: str = keys.SWEEPER_LEASE) -> Host | None:
        """The host whose process holds `lease` (its value is `<hostname>:<pid>:<random>`)."""
        with self.redis() as conn:
            value = conn.get(lease)
        if value is None:
            return None
        pid = int(str(value).split(":")[1])
        return next((h for h in self.hosts if h.process.pid == pid), None)

    # -- partitions -----------------------------------------------------------------

    def _redis_rules(self, action: str, index: int) -> None:
        bridge, port = self.network.bridge_ip, str(self.valkey_port)
        for chain, way in (("OUTPUT", "-d"), ("INPUT", "-s")):
            side = "--dport" if chain == "OUTPUT" else "--sport"
            sh(
                *self.network.in_netns(index, "iptables", action, chain),
                *("-p", "tcp", way, bridge, side, port, "-j", "DROP"),
            )

    def cut_from_redis(self, host: Host) -> None:
        """Black-hole the host's traffic with Redis both ways: its connections hang."""
        self._redis_rules("-I", host.index)
        self.cut.add(host.index)

    def heal(self, host: Host) -> None:
        self._redis_rules("-D", host.index)
        self.cut.discard(host.index)

    # -- stop -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything, whatever state a failed start or test left behind."""
        # All hosts at once: each may wait out uvicorn's graceful 10 s for a long-poll a
        # Socket.IO client left open, and one after another that was 3 x 10 s.
        hosts = [h.process for h in self.hosts]
        for process in hosts:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 10
        for process in hosts:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.haproxy is not None:
            _stop(self.haproxy, 5)
        if self.valkey is not None:
            _stop(self.valkey, 5)
        with contextlib.suppress(Exception):
            self.postgres.stop()
        self.network.destroy()


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _pings(rig: Rig) -> bool:
    assert rig.valkey is not None
    if rig.valkey.poll() is not None:
        raise RuntimeError("valkey-server exited")
    try:
        with rig.redis() as conn:
            return bool(conn.ping())
    except redis.ConnectionError:
        return False


def _ready(host: Host) -> bool:
    if host.process.poll() is not None:
        raise RuntimeError(f"{host.name} exited:\n{host.log.read_text(errors='replace')[-3000:]}")
    try:
        return httpx.get(f"{host.url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_rig() -> Iterator[Rig]:
    """A started rig, removed on the way out however the block ends."""
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="sneakerdrop-rig-") as folder:
        root = Path(folder)
        os.chmod(root, 0o755)  # the embedded PostgreSQL's own user must reach it (as root)
        network = Network.create(HOSTS)
        rig = Rig(root, network, OwnedPostgres(root / "pg"))
        try:
            rig.start()
            yield rig
        finally:
            rig.close()
