"""Which store server processes are alive: for the tests of embedded start and stop."""

from __future__ import annotations

from pathlib import Path

import psutil


def alive(pid: int) -> bool:
    """Running, and not a zombie (an orphaned postmaster is reaped by PID 1, if ever)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def servers_using(data_dir: Path) -> list[int]:
    """Live PostgreSQL or Valkey servers whose command line or folder is under data_dir."""
    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline", "cwd", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not (info["name"] or "").startswith(("postgres", "valkey-server")):
            continue
        where = " ".join(info["cmdline"] or []) + " " + (info["cwd"] or "")
        if str(data_dir) in where:
            found.append(info["pid"])
    return found
