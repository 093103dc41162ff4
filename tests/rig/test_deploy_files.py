"""docker-compose.yml and deploy/haproxy.cfg agree with each other and with the rig.

No Docker engine runs here, so the compose file is checked as data: the balancer
mounts the very haproxy.cfg the rig runs, gives every variable that file needs, and
names the hosts the file's `server` lines expect; HAProxy itself validates the file
with the environment compose gives it (`haproxy -c`).
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.rig import HAPROXY_CFG, HOSTS, ROOT
from tests.support.rig_network import ensure_tools

pytestmark = pytest.mark.rig

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _required_variables(config: str) -> set[str]:
    """`"${NAME}"` without a default: the environment must give them."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", config))


def test_balancer_runs_the_rigs_haproxy_cfg(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    mounts = [volume.split(":") for volume in lb["volumes"]]
    assert [(ROOT / source).resolve() for source, *_ in mounts] == [HAPROXY_CFG]
    assert mounts[0][1] == "/usr/local/etc/haproxy/haproxy.cfg"  # the image's default
    assert _required_variables(HAPROXY_CFG.read_text()) <= set(lb["environment"])


def test_every_server_line_is_an_api_host(compose: dict[str, Any]) -> None:
    config = HAPROXY_CFG.read_text()
    servers = re.findall(r"^\s*server (\S+) \"\$\{(API\d_ADDR)\}\"", config, re.M)
    assert len(servers) == HOSTS  # the rig runs one host per server line
    lb_env = compose["services"]["lb"]["environment"]
    for name, variable in servers:
        assert lb_env[variable] == f"{name}:4000"
        api = compose["services"][name]
        assert api["environment"]["ENV"] == "production"
        assert api["command"][:2] == ["sneakerdrop", "serve"]
    assert "option httpchk GET /readyz" in config


def test_production_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["api1"]["environment"]
    for secret in ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "METRICS_TOKEN"):
        assert re.fullmatch(rf"\$\{{{secret}:\?.+\}}", env[secret]), env[secret]
    lb_address = services["lb"]["networks"]["backend"]["ipv4_address"]
    assert env["TRUSTED_PROXIES"] == lb_address
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis
    assert "--notify-keyspace-events Ex" in redis
    assert "--maxmemory-policy noeviction" in redis


def test_cluster_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = [name for name in services if name.startswith("redis-node-")]
    assert len(nodes) == 6
    for name in nodes:
        node = services[name]
        assert node["profiles"] == ["cluster"]
        command = " ".join(node["command"])
        assert "--cluster-enabled yes" in command
        assert "--appendonly yes" in command
        assert "--notify-keyspace-events Ex" in command
    init = services["redis-cluster-init"]
    assert init["profiles"] == ["cluster"]
    assert set(init["depends_on"]) == set(nodes)
    assert "--cluster-replicas 1" in init["command"][0]


def test_haproxy_accepts_the_file_with_composes_environment(compose: dict[str, Any]) -> None:
    ensure_tools()
    lb_env = {k: str(v) for k, v in compose["services"]["lb"]["environment"].items()}
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)],
        env={**os.environ, **lb_env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout
