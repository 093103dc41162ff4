"""The app served by real uvicorn on a thread of its own, for synchronous test code.

Schemathesis tests are synchronous (Hypothesis drives them), so the app cannot run on
the test session's event loop: that loop is idle while a test runs. Here uvicorn gets
its own thread and loop, with the lifespan on, so the container talks to the real
stores exactly as `sneakerdrop serve` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.config import Settings
from app.main import create_app
from tests.support.realtime_server import uvicorn_on_free_port

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[str]:
    """Yield the base URL of a started server; stop it (lifespan shutdown included) after."""
    server, sock, port = uvicorn_on_free_port(create_app(settings))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the test thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if failure or not thread.is_alive():
                raise AssertionError(f"uvicorn stopped before it started: {failure}")
            if time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start in time")
            time.sleep(0.01)  # a thread's flag, no event to await
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        if thread.is_alive():
            raise AssertionError(f"the server did not stop within {STOP_TIMEOUT}s")
        if failure:
            raise failure[0]
