"""Engine.IO session ids that start with this worker's id (python-socketio internal).

python-socketio builds its Engine.IO server from the class its `_engineio_server_class()`
method returns (an internal: no public option chooses it). `WorkerSocketServer`
returns `WorkerEngineIOServer` there, whose `generate_id()` (public) puts the worker id
in front of python-engineio's own id, so that any worker or host can tell whose
session a request belongs to (app/realtime/session_routing.py).

`check_session_ids()` runs at start-up and fails loudly when the internal is gone.
Off switch: `SOCKET_FORWARD_HOST=off` (plain `socketio.AsyncServer`). docs/RUNTIME.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import engineio
import socketio

from app.runtime.session_ids import SEPARATOR, owner_of


class WorkerEngineIOServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, whose session ids start with this worker's id."""

    worker_id = ""

    def generate_id(self) -> str:
        return f"{self.worker_id}{SEPARATOR}{super().generate_id()}"


class WorkerSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on a WorkerEngineIOServer for `worker_id`."""

    def __init__(self, *args: Any, worker_id: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eio.worker_id = worker_id

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return WorkerEngineIOServer

    @classmethod
    def for_worker(cls, worker_id: str) -> Callable[..., WorkerSocketServer]:
        return functools.partial(cls, worker_id=worker_id)


def check_session_ids(sio: Any, worker_id: str) -> None:
    """Fail loudly when python-socketio no longer builds its server through the override."""
    if (
        not isinstance(sio.eio, WorkerEngineIOServer)
        or owner_of(sio.eio.generate_id()) != worker_id
    ):
        raise RuntimeError(
            f"python-socketio {version('python-socketio')} did not use WorkerEngineIOServer (its _engineio_server_class() internal changed):"
            " Engine.IO sessions cannot be routed to their worker. SOCKET_FORWARD_HOST=off"
            " serves without routing (one worker only); see docs/RUNTIME.md"
        )
