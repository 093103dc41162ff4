"""Engine.IO session ids that name the worker holding the session: `<workerId>.<random>`.

python-engineio keeps a session in the memory of the process that made its handshake,
while the next request of that session may reach any worker or host. With the owner's
id in the session id, any worker can tell whose session a request belongs to and hand
it over (app/realtime/session_routing.py) without asking anyone. The ids are made by
app/runtime/engineio_sids.py.
"""

from __future__ import annotations

from app.runtime.randomness import token_hex

SEPARATOR = "."  # URL-safe, and never in python-engineio's own ids (base64 with - and _)
_WORKER_ID_CHARS = 8


def new_worker_id() -> str:
    """A short random id for this worker process (a new one at every start)."""
    return token_hex(_WORKER_ID_CHARS // 2)


def owner_of(sid: str) -> str | None:
    """The worker id a session id names, or None for an id of another shape."""
    worker, separator, rest = sid.partition(SEPARATOR)
    if not separator or not rest or len(worker) != _WORKER_ID_CHARS:
        return None
    return worker
