"""Who used the two cores during a phase: the servers, the stores, the generator, others.

A throughput ratio means little if another job took a core from one server and not
from the other, and a p99 taken while the machine is busy is the machine's. Each phase
reports the cores each group used (`cores_between`) and flags one where "other" (the
rest of the machine) used more than `BUSY_OTHER_CORES`; `--wait-quiet` first waits for
the rest of the machine to go idle (`wait_quiet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import psutil

BUSY_OTHER_CORES = 0.2


class Sampler(Protocol):
    """A CPU meter: CPU seconds so far per group, with the rest of the machine as "other"."""

    def sample(self) -> dict[str, float]: ...


def listening_pids(*urls: str) -> list[int]:
    """The processes listening on the ports of these URLs (the stores, on this host)."""
    ports = {urlsplit(url).port for url in urls} - {None}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return []
    return sorted(
        {
            c.pid
            for c in connections
            if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports
        }
    )


class CpuMeter:
    """CPU seconds so far of each group; `sample()["steal"]` is the time the machine's
    vCPUs were kept waiting by the hypervisor, `sample()["other"]` the rest of the
    machine.

    `groups` are more processes of this run measured on their own (the real-time
    benchmark's client processes); `generator` names what is left of this process and
    its children (the load generator, the real-time benchmark's reserve driver).
    """

    def __init__(
        self,
        servers: dict[str, int],
        store_urls: Sequence[str],
        groups: Mapping[str, Sequence[int]] | None = None,
        generator: str = "generator",
    ) -> None:
        self.servers = servers  # name -> pid of the process started for it
        self.stores = listening_pids(*store_urls)
        self.groups = dict(groups or {})
        self.generator = generator

    def sample(self) -> dict[str, float]:
        stores = descendants(self.stores)
        sample = {name: tree_cpu_seconds([pid], stores) for name, pid in self.servers.items()}
        sample["stores"] = tree_cpu_seconds(self.stores, set())
        for name, pids in self.groups.items():
            sample[name] = tree_cpu_seconds(pids, stores)
        # This process and its children but the servers, stores and groups: the generator.
        measured = [*self.servers.values(), *itertools.chain(*self.groups.values())]
        sample[self.generator] = tree_cpu_seconds([os.getpid()], stores | descendants(measured))
        # Time the hypervisor ran something else while a vCPU of this guest wanted to run.
        sample["steal"] = float(psutil.cpu_times().steal)
        sample["other"] = machine_busy_seconds() - sum(sample.values())
        return sample

    def waits(self) -> dict[str, float]:
        """`run_queue_waits` of the servers and the stores."""
        groups: dict[str, Iterable[int]] = {name: [pid] for name, pid in self.servers.items()}
        groups["stores"] = self.stores
        return run_queue_waits(groups)


def run_queue_waits(groups: dict[str, Iterable[int]]) -> dict[str, float]:
    """Seconds each group's processes have so far spent runnable but waiting for a core
    (/proc/<pid>/schedstat, the main thread of each process and its descendants): a
    process can be fast and still answer late when it waits for a core."""
    waits: dict[str, float] = {}
    for name, pids in groups.items():
        total = 0
        for pid in descendants(pids):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
        waits[name] = total / 1e9
    return waits


def descendants(pids: Iterable[int]) -> set[int]:
    """These processes and all their descendants (alive ones)."""
    found: set[int] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found |= {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    return found


def cores_between(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    if seconds <= 0:
        return {}
    return {name: round((after[name] - before.get(name, 0.0)) / seconds, 3) for name in after}


def tree_cpu_seconds(pids: Iterable[int], exclude: set[int]) -> float:
    """User + system CPU seconds of these processes and their descendants (alive ones)."""
    seen: set[int] = set()
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in members:
            if process.pid in seen or process.pid in exclude:
                continue
            seen.add(process.pid)
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq + times.steal)


def cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of a process tree, summed by process name (the API, its embedded stores)."""
    totals: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return totals
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            name = member.name()
            totals[name] = totals.get(name, 0.0) + times.user + times.system
    return totals


def py_spy() -> str | None:
    """The py-spy command (on PATH or beside this Python), None when it is not installed."""
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


async def py_spy_record(
    spy: str, pid: int, seconds: float, output: Path, rate: int, *, quiet: bool = False
) -> asyncio.subprocess.Process:
    """`py-spy record` of `pid` for `seconds` (whole) into `output` as collapsed stacks
    (speedscope, flamegraph.pl); `quiet`: non-blocking sampling, and nothing printed."""
    argv = [spy, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds))]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(output)]
    silent = asyncio.subprocess.DEVNULL if quiet else None
    return await asyncio.create_subprocess_exec(
        *argv,
        *(["--nonblocking"] if quiet else []),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=silent,
        stdin=asyncio.subprocess.DEVNULL,
    )


def machine() -> dict[str, Any]:
    """The machine a figure was taken on, and how loaded it was then."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def wait_quiet(meter: Sampler, within: float, cores: float = 0.15) -> float:
    """Wait (at most `within` s) until the rest of the machine uses < `cores` for 3 s.

    Returns the cores it used in the last 3 s. Other jobs on a shared machine take CPU
    from the server and the clients alike, so a figure is only worth taking quiet.
    """
    deadline = time.monotonic() + within
    while True:
        before, started = meter.sample()["other"], time.monotonic()
        await asyncio.sleep(3.0)
        other = (meter.sample()["other"] - before) / (time.monotonic() - started)
        if other < cores or time.monotonic() >= deadline:
            return other
