"""Socket.IO on every worker: `sneakerdrop serve` with its default workers (at least two).

Workers share one listening address, so each request of an Engine.IO session may reach
any worker, while the session lives in the memory of the worker that made the handshake.
These tests connect the official JavaScript client (tests/js) and python-socketio in the
three ways a client connects (default options: a long-polling handshake then the
upgrade; long-polling only; WebSocket only), and keep a polling client for 30 s of pushes.
Without routing by session id, 26 of 30 default JS clients failed to connect.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import socketio

from app.cli import DEFAULT_WORKERS
from app.embedded.common import free_port
from app.runtime.session_ids import owner_of
from app.store.workers import WorkerRegistry
from tests.conftest import make_settings
from tests.js import node_clients
from tests.support.factories import PASSWORD, auth, create_drop, signup
from tests.support.realtime_server import (
    log_text,
    serve_in_process,
    stop_serve_processes,
    wait_ready,
)
from tests.support.serve import serve_env
from tests.support.stores import StoreUrls

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "sio-workers-admin@example.com"
WORKERS = max(2, DEFAULT_WORKERS)  # the default, but never one: the point is several
CROWD = 100  # official JS clients per mode
PY_CROWD = 20  # python-socketio clients per mode
DROPS = 3  # storefront drops, so the connect snapshot is three `stock_update`s
KEEP_S = 30  # how long the polling client stays
MODES = ("default", "polling", "websocket")
_FORWARDED = re.compile(
    r"^sneakerdrop_socketio_forwarded_total\{([^}]*)\}\s+([0-9.e+]+)$", re.MULTILINE
)


@pytest.fixture(scope="session")
def js_installed() -> None:
    node_clients.install()


@dataclass
class Serve:
    url: str
    process: asyncio.subprocess.Process
    log: Path
    http: httpx.AsyncClient
    admin: str
    drops: list[str]


def _env(stores: StoreUrls, data_dir: Path) -> dict[str, str]:
    return {
        **serve_env(stores, data_dir, ADMIN_EMAIL),
        "STOCK_BROADCAST_INTERVAL_MS": "50",
        "DROPS_CACHE_MS": "0",
    }


@pytest.fixture
async def serve(stores: StoreUrls, tmp_path: Path) -> AsyncIterator[Serve]:
    """`sneakerdrop serve --workers N` on the test stores, with three live drops."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    script = Path(sys.executable).with_name("sneakerdrop")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            "serve",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), **_env(stores, tmp_path / "data")},
            start_new_session=True,
        )
    try:
        await wait_ready(process, url, log)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            login = await http.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin = login.json()["accessToken"]
            drops = [(await create_drop(http, admin, totalStock=40))["id"] for _ in range(DROPS)]
            yield Serve(url, process, log, http, admin, drops)
    finally:
        codes = await stop_serve_processes([process])
        assert codes == [0], log_text(log)[-3000:]


async def _forwarded(server: Serve) -> dict[str, float]:
    """sneakerdrop_socketio_forwarded_total by its labels, all workers added up."""
    response = await server.http.get("/metrics")
    assert response.status_code == 200, response.text
    return {labels: float(value) for labels, value in _FORWARDED.findall(response.text)}


def _ok_polls(counts: dict[str, float]) -> float:
    return sum(v for k, v in counts.items() if 'transport="polling"' in k and 'outcome="ok"' in k)


async def test_official_js_clients_connect_in_every_mode(js_installed: None, serve: Serve) -> None:
    """100 official clients per mode connect, get the snapshot and stay connected."""
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        started = time.monotonic()
        results[mode] = await node_clients.run_clients(serve.url, CROWD, mode, DROPS)
        results[mode]["seconds"] = round(time.monotonic() - started, 1)
    print(
        {
            mode: {k: r[k] for k in ("ok", "errors", "snapshotMs", "transports", "seconds")}
            for mode, r in results.items()
        }
    )
    for mode, result in results.items():
        assert result["ok"] == CROWD, (mode, result)
    assert results["default"]["transports"] == {"websocket": CROWD}, results["default"]
    assert results["polling"]["transports"] == {"polling": CROWD}, results["polling"]


@dataclass
class _PyClient:
    sio: socketio.AsyncClient
    drops: set[str]
    snapshot: asyncio.Event
    disconnects: int = 0


async def _python_client(url: str, transports: list[str] | None) -> _PyClient:
    client = _PyClient(socketio.AsyncClient(reconnection=False), set(), asyncio.Event())

    async def on_stock(data: dict[str, Any]) -> None:
        client.drops.add(data["dropId"])
        if len(client.drops) >= DROPS:
            client.snapshot.set()

    async def on_disconnect(*_: Any) -> None:
        client.disconnects += 1

    client.sio.on("stock_update", on_stock)
    client.sio.on("disconnect", on_disconnect)
    await client.sio.connect(url, transports=transports, wait_timeout=10)
    await asyncio.wait_for(client.snapshot.wait(), 20)
    return client


async def test_python_clients_connect_in_every_mode(serve: Serve) -> None:
    """python-socketio's AsyncClient, default options, polling only, WebSocket only."""
    transports: dict[str, list[str] | None] = {
        "default": None,
        "polling": ["polling"],
        "websocket": ["websocket"],
    }
    clients: dict[str, list[_PyClient]] = {}
    failures: dict[str, list[str]] = {}
    for mode, chosen in transports.items():
        outcomes = await asyncio.gather(
            *(_python_client(serve.url, chosen) for _ in range(PY_CROWD)), return_exceptions=True
        )
        clients[mode] = [c for c in outcomes if isinstance(c, _PyClient)]
        failures[mode] = [repr(e) for e in outcomes if isinstance(e, BaseException)]
    # Every client, of every mode, still connected after the others joined (its polls and
    # upgrade went through whichever worker the kernel picked).
    await asyncio.sleep(1)  # let a misrouted poll or upgrade fail, if one would
    connected = {
        mode: sum(1 for c in group if c.sio.connected and c.disconnects == 0)
        for mode, group in clients.items()
    }
    expected_transport = {"default": "websocket", "polling": "polling", "websocket": "websocket"}
    transports_seen = {
        mode: {c.sio.transport() for c in group if c.sio.connected}
        for mode, group in clients.items()
    }
    # Stop the server before the clients: python-engineio leaves a polling client's last
    # GET unanswered after its CLOSE, so a polling client's disconnect() would wait ~30 s.
    await stop_serve_processes([serve.process])
    await asyncio.gather(
        *(asyncio.wait_for(c.sio.disconnect(), 10) for g in clients.values() for c in g),
        return_exceptions=True,
    )
    assert failures == {mode: [] for mode in transports}, failures
    assert connected == {mode: PY_CROWD for mode in transports}, connected
    assert transports_seen == {m: {t} for m, t in expected_transport.items()}, transports_seen


async def test_polling_client_keeps_receiving_pushes_from_every_worker(
    js_installed: None, serve: Serve
) -> None:
    """30 s of long-polling with a reserve about every second: every value reaches the client.

    Each poll is a new chance to land on another worker; the forwarded-request counter
    shows polls crossed workers, and the client never disconnected.
    """
    drop = serve.drops[0]
    buyers = [await signup(serve.http) for _ in range(KEEP_S + 5)]
    before = _ok_polls(await _forwarded(serve))
    clients = node_clients.NodeClients(serve.url, 1, "polling", DROPS, keep_s=KEEP_S + 5)
    await clients.start()
    try:
        ready = await clients.ready()
        assert ready["ok"] == 1, ready
        assert ready["kept"], ready
        seen: list[int] = []
        deadline = time.monotonic() + KEEP_S
        available = 40
        while time.monotonic() < deadline:
            started = time.monotonic()
            buyer = buyers[len(seen)]
            response = await serve.http.post(
                f"/api/drops/{drop}/reserve", headers=auth(buyer["accessToken"])
            )
            assert response.status_code == 201, response.text
            available -= 1
            while True:  # the push of this change (older ones may still be on the way)
                stock = await clients.next_stock(10)
                assert stock["transport"] == "polling", stock
                if stock["dropId"] == drop and stock["availableStock"] == available:
                    break
            seen.append(available)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # pacing only
        result = await clients.result()
    finally:
        await clients.close()
    kept = result["keptClient"]
    after = _ok_polls(await _forwarded(serve))
    print({"changes": len(seen), "kept": kept, "forwarded_polls": after - before})
    assert seen == list(range(39, 39 - len(seen), -1))
    assert len(seen) >= KEEP_S // 2  # about one a second, on a busy machine fewer
    assert kept["disconnects"] == [], kept
    assert kept["connectErrors"] == [], kept
    assert kept["transport"] == "polling"
    assert after - before > 0, "no poll crossed workers: the test did not exercise routing"


# --- two apps in this process: the hand-over itself --------------------------


async def _handshake(http: httpx.AsyncClient) -> str:
    response = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert response.status_code == 200, response.text
    sid: str = orjson.loads(response.text[1:])["sid"]  # "0{...}": an OPEN packet
    return sid


async def test_a_session_is_served_through_any_worker(
    stores: StoreUrls,
) -> None:
    """A session made on A is used through B's public address; B proxies to A.

    Also: a session of an unregistered worker, or of a worker whose address no longer
    answers, gets Engine.IO's unknown-session 400 (the client reconnects), and A's
    internal listener never forwards (no loops).
    """
    settings = make_settings(stores, socket_forward_host="127.0.0.1")  # whatever the default
    async with (
        serve_in_process(settings) as a,
        serve_in_process(settings) as b,
        httpx.AsyncClient(base_url=a.url, timeout=10) as via_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as via_b,
    ):
        routing_a = a.container.sio.eio.worker_id
        sid = await _handshake(via_a)
        assert owner_of(sid) == routing_a
        query = {"EIO": "4", "transport": "polling", "sid": sid}
        connect = await via_b.post("/socket.io/", params=query, content=b"40")
        assert connect.status_code == 200, connect.text
        answer = await via_b.get("/socket.io/", params=query)  # the CONNECT reply, through B
        assert answer.status_code == 200, answer.text
        assert answer.text.startswith("40{"), answer.text

        for _ in range(20):  # a PONG (it only re-arms the ping), through either app
            for http in (via_a, via_b):
                assert (await http.post("/socket.io/", params=query, content=b"3")).is_success

        unknown = {**query, "sid": "0badc0de.AAAAAAAAAAAAAAAAAAAA"}
        missing = await via_b.get("/socket.io/", params=unknown)
        assert missing.status_code == 400
        assert missing.json() == {"code": 1, "message": "Session ID unknown"}

        registry = WorkerRegistry(a.container.redis)
        await registry.register("deadbeef", f"127.0.0.1:{free_port()}", 30)  # nobody there
        gone = await via_b.get("/socket.io/", params={**query, "sid": "deadbeef.AAAAAAAA"})
        assert gone.status_code == 400
        assert gone.json() == {"code": 1, "message": "Session ID unknown"}

        # B's internal listener serves B's sessions only: A's session is unknown there.
        internal_b = await registry.address_of(b.container.sio.eio.worker_id)
        assert internal_b is not None
        async with httpx.AsyncClient(base_url=f"http://{internal_b}", timeout=10) as inside_b:
            looped = await inside_b.get("/socket.io/", params=query)
            assert looped.status_code == 400, looped.text
            assert (await inside_b.get("/api/drops")).status_code == 404  # Socket.IO only
        close = await via_b.post("/socket.io/", params=query, content=b"1")
        assert close.status_code == 200
