"""A second uvicorn server inside a worker that leaves the signal handlers alone.

Each worker serves its Socket.IO sessions on an internal address of its own
(app/realtime/internal_listener.py) with a `uvicorn.Server` run as a task of its event
loop. `Server.serve()` wraps itself in `capture_signals()` (an internal: undocumented),
which replaces the SIGINT/SIGTERM handlers for as long as it runs; in a worker those
belong to the worker's main server, which must stop the worker. `QuietServer`
overrides `capture_signals()` to do nothing.

`check_quiet_server()` runs before it starts; the listener also compares the handlers
before and after its start and fails loudly when they changed.
Off switch: `SOCKET_FORWARD_HOST=off` (no internal listener). docs/RUNTIME.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import version

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn's server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def check_quiet_server() -> None:
    """The override relies on `Server.serve()` wrapping itself in `capture_signals()`."""
    if not callable(getattr(uvicorn.Server, "capture_signals", None)):
        raise RuntimeError(
            f"uvicorn {version('uvicorn')} has no Server.capture_signals: the internal "
            "Socket.IO listener would take over SIGINT/SIGTERM. SOCKET_FORWARD_HOST=off "
            "serves without it (one worker only); see docs/RUNTIME.md"
        )
