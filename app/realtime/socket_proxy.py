"""Proxy one Engine.IO request to the worker that holds its session (aiohttp client).

Long-poll GETs are held by the owner until it has packets or the ping interval ends,
so reads have no short timeout; the response is streamed back as it comes. A
WebSocket is accepted here once the owner accepted it, then messages are pumped both
ways until either side closes, and both are closed together.

Outcomes, for the metric: `ok`; `unknown` (no such worker: the client gets Engine.IO's
unknown-session answer and reconnects); `unreachable` (the owner's address did not
answer: it is gone, same answer); `client_left` (the client went away first, as it
does with the long-poll pending when it upgrades or closes); `error` (a failure after
the answer began, or a busy pool: 503, and the client reconnects too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

FORWARDED_BY = "x-sneakerdrop-forwarded-by"
# What Engine.IO answers for a session it does not know; the client then reconnects.
UNKNOWN_SESSION = b'{"code":1,"message":"Session ID unknown"}'
MAX_BODY_BYTES = 1 << 20  # far above the server's max_http_buffer_size; Engine.IO checks that
_HOP_BY_HOP = {
    b"connection",
    b"content-length",
    b"host",
    b"keep-alive",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
# Forwarded as the client sent it: the owner checks a browser's Origin against this Host
# (Engine.IO's same-origin rule); the owner's own address there would refuse every browser.
_KEEP_HOST = _HOP_BY_HOP - {b"host"}
_WS_OWN = {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions"}
_WS_PROTOCOL = b"sec-websocket-protocol"
Scope = dict[str, Any]


def _headers(scope: Scope, skip: set[bytes]) -> list[tuple[str, str]]:
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name.lower() not in skip
    ]


def _url(address: str, scope: Scope, scheme: str) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scheme}://{address}{scope['path']}?{query}"


class SocketProxy:
    def __init__(
        self, pool_per_owner: int, connect_timeout: float, read_timeout: float, worker_id: str
    ) -> None:
        self._worker_id = worker_id
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=pool_per_owner),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_read=read_timeout
            ),
            auto_decompress=False,  # the owner's bytes and Content-Encoding go through as they are
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        await self._session.close()

    async def http(self, address: str | None, scope: Scope, receive: Any, send: Any) -> str:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return "client_left"
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _plain(send, 413, b"Payload Too Large")
                return "error"
            if not message.get("more_body"):
                break
        if address is None:
            await _plain(send, 400, UNKNOWN_SESSION)
            return "unknown"
        exchange = asyncio.ensure_future(self._exchange(address, scope, bytes(body), send))
        gone = asyncio.ensure_future(_disconnected(receive))
        # A client that leaves a long-poll frees its connection to the owner at once.
        await asyncio.wait({exchange, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not exchange.done():
            exchange.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exchange
            return "client_left"
        return exchange.result()

    async def _exchange(self, address: str, scope: Scope, body: bytes, send: Any) -> str:
        headers = [*_headers(scope, _KEEP_HOST), (FORWARDED_BY, self._worker_id)]
        started = False
        try:
            async with self._session.request(
                scope["method"],
                _url(address, scope, "http"),
                data=body if body else None,
                headers=headers,
                allow_redirects=False,
            ) as upstream:
                started = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": [
                            (name.lower(), value)
                            for name, value in upstream.raw_headers
                            if name.lower() not in _HOP_BY_HOP or name.lower() == b"content-length"
                        ],
                    }
                )
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return "ok"
        except aiohttp.ClientConnectorError:
            log.info("a Socket.IO session's worker is gone", extra={"owner": address})
            await _plain(send, 400, UNKNOWN_SESSION)
            return "unreachable"
        except (aiohttp.ClientError, TimeoutError):
            if started:
                raise  # the answer is half sent: only dropping the connection tells the client
            await _plain(send, 503, b"Service Unavailable")
            return "error"

    async def websocket(self, address: str | None, scope: Scope, receive: Any, send: Any) -> str:
        if (await receive())["type"] != "websocket.connect":
            return "error"
        if address is None:
            await send({"type": "websocket.close", "code": 1008})
            return "unknown"
        protocols = [
            p.strip()
            for name, value in scope["headers"]
            if name.lower() == _WS_PROTOCOL
            for p in value.decode("latin-1").split(",")
        ]
        skip = _KEEP_HOST | _WS_OWN | {_WS_PROTOCOL}
        try:
            upstream = await self._session.ws_connect(
                _url(address, scope, "ws"),
                headers=[*_headers(scope, skip), (FORWARDED_BY, self._worker_id)],
                protocols=protocols,
                autoping=True,
                max_msg_size=0,  # the owner enforces its own limit
            )
        except aiohttp.WSServerHandshakeError:  # the owner refused: unknown session
            await send({"type": "websocket.close", "code": 1008})
            return "unknown"
        except aiohttp.ClientConnectorError:
            await send({"type": "websocket.close", "code": 1008})
            return "unreachable"
        except (aiohttp.ClientError, TimeoutError):
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return "error"
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
            await _pump(upstream, receive, send)
        finally:
            await upstream.close()
        return "ok"


async def _pump(upstream: aiohttp.ClientWebSocketResponse, receive: Any, send: Any) -> None:
    """Messages both ways until one side closes; then close the other."""

    async def client_to_owner() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await upstream.send_str(message["text"])
                elif message.get("bytes") is not None:
                    await upstream.send_bytes(message["bytes"])

    async def owner_to_client() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type == aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
        with contextlib.suppress(Exception):  # the client may be gone already
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = {asyncio.ensure_future(client_to_owner()), asyncio.ensure_future(owner_to_client())}
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.debug("a forwarded WebSocket ended with an error", exc_info=task.exception())


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _plain(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
