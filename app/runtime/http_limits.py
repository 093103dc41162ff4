"""A bounded request head for uvicorn's httptools protocol: 431 past 16 KiB, closed after 10 s.

uvicorn puts no bound on a request's head. httptools keeps a header's value in memory
until the header ends, so eight clients each sending an endless header grew a worker
by 1.16 GiB; and uvicorn waits for a head forever (its keep-alive timeout runs only
between requests), so every half-sent request held a connection as long as its
client liked. This subclass of `HttpToolsProtocol` (uvicorn's internal protocol
class, whose `data_received` and parser callbacks it wraps) counts the bytes of each
head as they arrive and parses at most `HEAD_LIMIT_BYTES` of it: one byte more is
answered 431 problem+json (`HEADERS_TOO_LARGE`) and the connection is closed. A timer
armed at the connection's start and at the first byte of each later request closes
the connection when the head is not complete within `HEAD_TIMEOUT_SECONDS`.

`serve_protocol()` checks, at start-up, that the internals relied on are still there.
Off switch: `HTTP_LIMITS=off` (`serve` then runs uvicorn's own protocol).
docs/RUNTIME.md has the figures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

log = logging.getLogger(__name__)

HEAD_LIMIT_BYTES = 16 * 1024  # request line + headers, CRLFs included
HEAD_TIMEOUT_SECONDS = 10.0
# After a 431 the connection reads and drops what the client still sends, a little
# while, so that its kernel does not reset the connection before the answer is read.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
CODE = "HEADERS_TOO_LARGE"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that parses at most HEAD_LIMIT_BYTES of a head, in time.

    A head is open from the connection's start, and again from the end of each request
    (`on_message_complete`), until `on_headers_complete`. While it is open, every byte
    read counts against the limit, and only what fits is handed to the parser. A head
    that begins in the middle of a read (pipelining) is counted by its parsed fields
    for the rest of that read, then by bytes again.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_open = True
        self._head_bytes = 0
        self._count_fields = False  # a head began inside the read being parsed
        self._deadline: asyncio.TimerHandle | None = None  # head timeout, or linger after a 431
        self._rejected = False
        self._dropped = 0

    # Protocol interface

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._close_in(HEAD_TIMEOUT_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:  # lingering after a 431: never parsed, never kept
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self._close()
            return
        if not self._head_open:
            self._feed(data)
            return
        room = HEAD_LIMIT_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed(data)
            return
        self._head_bytes += room
        if room > 0:
            self._feed(data[:room])
        if self._rejected or self.transport.is_closing():
            return
        if self._head_open and self._head_bytes >= HEAD_LIMIT_BYTES:
            self._reject()
            return
        # The head ended within the limit. The rest goes to whoever reads the connection
        # now: this protocol (a body, the next request), or the WebSocket protocol.
        protocol = self.transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        super().data_received(data)
        self._count_fields = False
        if self._head_open and self._head_bytes > HEAD_LIMIT_BYTES and not self._rejected:
            self._reject()  # a pipelined head that overflowed within one read

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the first byte of a later request on this connection
            self._close_in(HEAD_TIMEOUT_SECONDS)

    def on_url(self, url: bytes) -> None:
        if self._count_fields:
            self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count_fields:
            self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes, self._count_fields = True, 0, True

    # Limits

    def _reject(self) -> None:
        """431 and close; bytes still coming are read and dropped for a short while."""
        self._rejected, self._head_open = True, False
        self._cancel_deadline()
        log.debug("request head over %d bytes: 431", HEAD_LIMIT_BYTES)
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._close()  # a pipelined head overflowed while a response is being written
            return
        self.transport.write(
            too_large_response(self.server_state.default_headers, self.headers or [])
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._close_in(LINGER_SECONDS)

    def _close_in(self, seconds: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(seconds, self._close)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def _no_request_id(scope: dict[str, Any]) -> str:
    return "-"


# The 431 follows the API's own rules: its problem+json body (app/api/problems.py) and
# its X-Request-ID (app/api/middleware.py, a valid one among the headers read is
# echoed). The app hands them over when it is built (`answer_as_the_api`, called by
# app/main.py in each worker): the API imports this package, so this one cannot import it.
_TOO_LARGE_BODY = b""
_request_id: Callable[[dict[str, Any]], str] = _no_request_id


def answer_as_the_api(
    problem_body: Callable[[int, str, str, str], bytes],
    request_id: Callable[[dict[str, Any]], str],
) -> None:
    global _TOO_LARGE_BODY, _request_id
    _TOO_LARGE_BODY = problem_body(
        431,
        CODE,
        "Request headers too large",
        f"The request line and headers exceed {HEAD_LIMIT_BYTES} bytes",
    )
    _request_id = request_id


def too_large_response(
    default_headers: list[tuple[bytes, bytes]], request_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The whole 431 answer, written by the protocol itself: no app sees such a request."""
    body = _TOO_LARGE_BODY
    parts = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
    for name, value in default_headers:
        parts += [name, b": ", value, b"\r\n"]
    parts += [
        b"content-type: application/problem+json\r\n",
        b"x-content-type-options: nosniff\r\n",
        b"content-length: %d\r\n" % len(body),
        b"x-request-id: " + _request_id({"headers": request_headers}).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(parts)


# The internals this module relies on. `__init__` must set these attributes.
_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
)
_ATTRIBUTES = ("parser", "transport", "loop", "server_state", "cycle", "headers")


def check_internals() -> None:
    """Fail at start-up, naming uvicorn's version, when an internal relied on is gone."""
    missing = [f"HttpToolsProtocol.{m}()" for m in _METHODS if not hasattr(HttpToolsProtocol, m)]
    assigned = set(HttpToolsProtocol.__init__.__code__.co_names)
    missing += [f"HttpToolsProtocol.{a}" for a in _ATTRIBUTES if a not in assigned]
    if "response_complete" not in RequestResponseCycle.__init__.__code__.co_names:
        missing.append("RequestResponseCycle.response_complete")
    if not hasattr(ServerState(), "default_headers"):
        missing.append("ServerState.default_headers")
    if missing:
        raise RuntimeError(
            f"uvicorn {uvicorn.__version__} lacks {', '.join(missing)}, which "
            "app.runtime.http_limits relies on: install the uvicorn version pyproject.toml "
            "allows, or set HTTP_LIMITS=off (docs/RUNTIME.md)"
        )


def serve_protocol(enabled: bool) -> type[asyncio.Protocol] | str:
    """uvicorn's `http` setting for `serve`: the bounded protocol, or uvicorn's own when off."""
    if not enabled:
        return "httptools"
    check_internals()
    return BoundedHttpToolsProtocol
