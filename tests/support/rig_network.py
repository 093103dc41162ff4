"""The rig's private network: a host-side bridge and one network namespace per API host.

Layout, for run id `<id>` and a free subnet 10.213.N.0/24 (N picked at random among
the ones no interface of this machine uses):

    root namespace                        namespace sdrig-<id>-<i>
    bridge sdb<id> 10.213.N.1/24  <-veth->  sdn<id><i> 10.213.N.(10+i)/24
      stores listen here (and on 127.0.0.1)   one `sneakerdrop serve` on :4000

Everything is named after the run id, and a marker file under MARKERS records the
pid of the run that owns it, so a run that died without cleaning up is cleaned by the
next one (its pid is gone) and two runs never touch each other's interfaces.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARKERS = Path("/run/sneakerdrop-rig")
PACKAGES = {"haproxy": "haproxy", "ip": "iproute2", "iptables": "iptables"}


def ensure_tools() -> None:
    """Install HAProxy, iproute2 and iptables from Debian's packages when one is missing.

    Idempotent: nothing runs when all three are on PATH. `apt-get update` runs only when
    the first install fails (a fresh machine without package lists).
    """
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def _subnets_in_use() -> set[int]:
    """The N of every 10.213.N.x address or route on this machine."""
    seen = sh("ip", "-o", "-4", "addr", "show").stdout + sh("ip", "-4", "route", "show").stdout
    return {int(n) for n in re.findall(r"\b10\.213\.(\d+)\.", seen)}


@dataclass
class Network:
    run_id: str
    third: int  # the N of 10.213.N.0/24
    hosts: int

    @property
    def bridge(self) -> str:
        return f"sdb{self.run_id}"

    @property
    def bridge_ip(self) -> str:
        return f"10.213.{self.third}.1"

    def netns(self, index: int) -> str:
        return f"sdrig-{self.run_id}-{index}"

    def address(self, index: int) -> str:
        return f"10.213.{self.third}.{10 + index}"

    def _veth(self, index: int) -> tuple[str, str]:
        return f"sdv{self.run_id}{index}", f"sdn{self.run_id}{index}"

    @classmethod
    def create(cls, hosts: int) -> Network:
        clean_leftovers()
        run_id = os.urandom(3).hex()
        taken = _subnets_in_use()
        choices = [n for n in range(1, 255) if n not in taken]
        network = cls(run_id, random.choice(choices), hosts)
        MARKERS.mkdir(parents=True, exist_ok=True)
        (MARKERS / run_id).write_text(f"{os.getpid()} {hosts}\n")
        try:
            network._build()
        except BaseException:
            network.destroy()
            raise
        return network

    def _build(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for index in range(1, self.hosts + 1):
            ns, (outer, inner) = self.netns(index), self._veth(index)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", inner)
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def in_netns(self, index: int, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns(index), *argv]

    def destroy(self) -> None:
        """Remove every namespace (after killing what still runs in it) and interface."""
        _destroy(self.run_id, self.hosts)


def _destroy(run_id: str, hosts: int) -> None:
    for index in range(1, hosts + 1):
        ns = f"sdrig-{run_id}-{index}"
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "del", ns, check=False)  # also deletes the veth pair
        sh("ip", "link", "del", f"sdv{run_id}{index}", check=False)
    sh("ip", "link", "del", f"sdb{run_id}", check=False)
    (MARKERS / run_id).unlink(missing_ok=True)


def clean_leftovers() -> None:
    """Remove what earlier runs left behind when their process is gone (a crash, SIGKILL)."""
    if not MARKERS.is_dir():
        return
    for marker in MARKERS.iterdir():
        try:
            pid, hosts = (int(part) for part in marker.read_text().split())
        except (OSError, ValueError):
            marker.unlink(missing_ok=True)
            continue
        if not Path(f"/proc/{pid}").exists():
            _destroy(marker.name, hosts)
