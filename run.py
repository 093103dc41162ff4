#!/usr/bin/env python3
"""Start here: `python3 run.py serve`, `python3 run.py test`, `python3 run.py lint`.

Needs only Python 3.11+. Creates `.venv` beside this file if missing, installs the
project into it (again only when pyproject.toml changed), then runs the command:

    python3 run.py serve [--port N] [--workers N]   the API, with embedded stores
    python3 run.py test [pytest args...]            the test suite
    python3 run.py lint                             ruff check, ruff format --check, mypy
    python3 run.py migrate | create-admin EMAIL | demo | reconcile --once | check
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"  # Linux and macOS (the embedded stores use fcntl)
PYTHON = BIN / "python"
STAMP = VENV / ".sneakerdrop-install.json"
SNEAKERDROP_COMMANDS = {"serve", "migrate", "create-admin", "demo", "reconcile", "check"}


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


def ensure_installed(dev: bool) -> None:
    """`pip install -e .[dev]`, skipped while pyproject.toml and the extras are unchanged."""
    ensure_venv()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    if stamp.get("pyproject") == digest and (stamp.get("dev") or not dev):
        return
    target = ".[dev]" if dev else "."
    say(f"installing the project into .venv (pip install -e '{target}'), this takes a while once")
    command = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    result = subprocess.run([*command, "-e", target], cwd=ROOT, check=False)
    if result.returncode != 0:
        sys.exit(f"run.py: pip install failed (exit {result.returncode})")
    STAMP.write_text(json.dumps({"pyproject": digest, "dev": dev}))
    say("installed")


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
