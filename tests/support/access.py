"""Helpers shared by the fair-access tests (tests/integration/access, tests/e2e).

Polling with a deadline instead of sleeping, queue and draw drops made through the API,
accounts made in bulk, one ticket or entry read straight from Redis, a reference model
of how a draw hands units out, and the statistics the fairness tests judge by.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.container import Container
from app.services.access import ticket_of
from app.store import keys
from app.store.keys import DropKeys
from tests.support.factories import auth, create_drop


async def eventually(
    check: Callable[[], Awaitable[Any]], seconds: float = 10, every: float = 0.05
) -> Any:
    """Poll `check` until it returns something truthy, or fail after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, f"condition not met within {seconds} s"
        await asyncio.sleep(every)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def from_now(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def queue_drop(
    client: httpx.AsyncClient,
    admin: str,
    starts_in: float,
    admit_per_minute: int = 600,
    pass_seconds: int = 300,
    **fields: Any,
) -> dict[str, Any]:
    """A queue drop starting `starts_in` seconds from now."""
    fields.setdefault("totalStock", 10)
    return await create_drop(
        client,
        admin,
        startsAt=iso(from_now(starts_in)),
        access="queue",
        queue={"admitPerMinute": admit_per_minute, "passSeconds": pass_seconds},
        **fields,
    )


async def draw_drop(
    client: httpx.AsyncClient,
    admin: str,
    closes_in: float,
    claim_seconds: int = 600,
    **fields: Any,
) -> dict[str, Any]:
    """A draw drop taking entries from a second ago until `closes_in` seconds from now."""
    now = datetime.now(UTC)
    fields.setdefault("startsAt", iso(now - timedelta(seconds=1)))
    fields.setdefault("totalStock", 10)
    return await create_drop(
        client,
        admin,
        access="draw",
        draw={"closesAt": iso(now + timedelta(seconds=closes_in)), "claimSeconds": claim_seconds},
        **fields,
    )


async def stop_the_apps_leader() -> None:
    """Stop the access leader of the app under test (a task named "access-leader"), so
    that a test's own leaders run alone."""
    for task in asyncio.all_tasks():
        if task.get_name() == "access-leader":
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def bulk_users(container: Container, count: int) -> list[str]:
    """`count` accounts written in one statement (ids only: no password, no session).

    The fairness record references its entries' users, so entries made below the API
    need real accounts; signing up a thousand through bcrypt would only cost time.
    """
    ids = [keys.new_id() for _ in range(count)]
    async with container.db.sales.transaction() as conn:
        await conn.copy_records_to_table(
            "users",
            records=[
                (uid, f"bulk-{uid}@example.com", "-", f"bulk{i}") for i, uid in enumerate(ids)
            ],
            columns=("id", "email", "password_hash", "display_name"),
        )
    return ids


async def fixed_record(client: httpx.AsyncClient, drop_id: str, seconds: float = 10) -> Any:
    """The drop's fairness record once its order is fixed (the seed revealed)."""

    async def fixed() -> Any:
        record = (await client.get(f"/api/drops/{drop_id}/fairness")).json()
        return record if record.get("seed") else None

    return await eventually(fixed, seconds)


async def published_entries(client: httpx.AsyncClient, drop_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/drops/{drop_id}/fairness/entries")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


async def wire_ticket(container: Container, drop_id: str, user_id: str) -> dict[str, Any]:
    """A user's ticket as /queue/me answers it, read from Redis in one script call."""
    _, facts = await container.access_store.ticket(drop_id, user_id)
    assert facts is not None, f"user {user_id} has no ticket"
    return ticket_of(drop_id, facts).to_wire()


async def my_entry(client: httpx.AsyncClient, drop_id: str, token: str) -> dict[str, Any]:
    response = await client.get(f"/api/drops/{drop_id}/entries/me", headers=auth(token))
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()
    return entry


async def hold_of(client: httpx.AsyncClient, token: str, reservation_id: str) -> dict[str, Any]:
    """The caller's live hold with this id (GET /api/me/reservations)."""
    response = await client.get("/api/me/reservations", headers=auth(token))
    assert response.status_code == 200, response.text
    found = [r for r in response.json() if r["id"] == reservation_id]
    assert found, f"{reservation_id} is not among the caller's live holds"
    hold: dict[str, Any] = found[0]
    return hold


@dataclass(frozen=True)
class QueueSnapshot:
    served: int  # the highest position admitted
    admitted_ms: list[int]  # by position (index 0: position 1); 0 while waiting
    entry_ids: list[str]  # by position


async def queue_snapshot(container: Container, drop_id: str) -> QueueSnapshot:
    """Every ticket of a queue drop with its position and admission time, read in one
    MULTI from the raw keys (lua/access_lib.lua's layout), so that admission running
    meanwhile cannot show a half-done state."""
    k = DropKeys(drop_id)
    pipe = container.redis.pipeline(transaction=True)
    pipe.hget(k.q, "served")
    pipe.zrange(k.q_pre, 0, -1)
    pipe.hgetall(k.q_late)
    pipe.hgetall(k.q_tix)
    served, pre, late, tickets = await pipe.execute()
    ids = [str(member)[64:] for member in pre]
    ids += [str(late[p]) for p in sorted(late, key=int)]
    assert [int(p) for p in sorted(late, key=int)] == list(range(len(pre) + 1, len(ids) + 1))
    admitted = [int(str(tickets[entry_id]).rsplit("|", 1)[1]) for entry_id in ids]
    assert len(tickets) == len(ids), "a ticket without a position"
    return QueueSnapshot(int(served or 0), admitted, ids)


# --- a reference model of the draw -------------------------------------------------------


@dataclass
class ModelEntry:
    entry_id: str
    position: int
    sizes: tuple[str, ...]  # size, then fallbacks ("" alone on a drop without sizes)
    status: str = "entered"
    size: str | None = None  # the size of its hold while won


class DrawModel:
    """How the contract says a draw goes: in position order each entry takes the first of
    its sizes with a unit left; a unit that comes back goes to the first standby entry
    (smallest position) that asked for its size; a standby entry is lost once none of its
    sizes has a unit available or held, or the drop ends."""

    def __init__(self, stock: dict[str, int], entries: Sequence[ModelEntry]) -> None:
        self.total = dict(stock)
        self.available = dict(stock)
        self.sold = dict.fromkeys(stock, 0)
        self.entries = sorted(entries, key=lambda e: e.position)
        for entry in self.entries:
            size = next((s for s in entry.sizes if self.available[s] > 0), None)
            if size is None:
                entry.status = "standby"
            else:
                self.available[size] -= 1
                entry.status, entry.size = "won", size
        self._lose_hopeless()

    def by_id(self, entry_id: str) -> ModelEntry:
        return next(e for e in self.entries if e.entry_id == entry_id)

    def release(self, entry_id: str) -> ModelEntry | None:
        """A winner's hold ends: the standby entry its unit goes to, if any."""
        gone = self.by_id(entry_id)
        assert gone.status == "won"
        size = gone.size
        assert size is not None
        gone.status, gone.size = "released", None
        taker = next((e for e in self.entries if e.status == "standby" and size in e.sizes), None)
        if taker is None:
            self.available[size] += 1
            return None
        taker.status, taker.size = "won", size
        return taker

    def buy(self, entry_id: str) -> None:
        """A winner buys: its size has one unit fewer that could come back."""
        winner = self.by_id(entry_id)
        assert winner.status == "won"
        assert winner.size is not None
        self.sold[winner.size] += 1
        self._lose_hopeless()

    def end(self) -> None:
        """The drop ended: nobody waits any more."""
        for entry in self.entries:
            if entry.status == "standby":
                entry.status = "lost"

    def _lose_hopeless(self) -> None:
        for entry in self.entries:
            if entry.status == "standby" and all(
                self.total[s] - self.sold[s] <= 0 for s in entry.sizes
            ):
                entry.status = "lost"


# --- statistics --------------------------------------------------------------------------


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation of two samples without ties."""
    n = len(xs)
    assert n == len(ys)
    assert n > 2
    rank_x = _ranks(xs)
    rank_y = _ranks(ys)
    d2 = sum((a - b) ** 2 for a, b in zip(rank_x, rank_y, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def _ranks(values: Sequence[float]) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0] * len(values)
    for rank, index in enumerate(order, 1):
        ranks[index] = rank
    assert len(set(values)) == len(values), "ties"
    return ranks


def chi_square_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-square with `dof` degrees of freedom: the regularized
    upper incomplete gamma Q(dof/2, statistic/2) (series below a + 1, Lentz's continued
    fraction above, as in Numerical Recipes)."""
    a, x = dof / 2, statistic / 2
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return 1 - total * math.exp(log_prefix)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(log_prefix) * h


# --- the official JavaScript client ------------------------------------------------------


class AccessClient:
    """One run of tests/js/access_client.mjs: a socket.io-client 4 client connected with
    `auth: {token}` (or without auth), its received events read as JSON lines."""

    def __init__(self, url: str, token: str | None = None, seconds: float = 60) -> None:
        self.url = url
        self.token = token
        self.seconds = seconds
        self.process: asyncio.subprocess.Process | None = None
        self.seen: list[dict[str, Any]] = []

    async def start(self) -> AccessClient:
        from tests.js import node_clients

        node_clients.install()
        argv = [str(node_clients.HERE / "access_client.mjs"), "--url", self.url]
        argv += ["--seconds", str(self.seconds)]
        if self.token is not None:
            argv += ["--token", self.token]
        self.process = await asyncio.create_subprocess_exec(
            "node",
            *argv,
            cwd=node_clients.HERE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def next(self, event: str, within: float = 10, **match: Any) -> dict[str, Any]:
        """The next line of kind `event` (whose payload's fields include `match`)."""
        assert self.process is not None
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            left = deadline - loop.time()
            assert left > 0, f"no {event} {match} within {within} s; seen: {self.seen[-5:]}"
            raw = await asyncio.wait_for(self.process.stdout.readline(), left)
            if not raw:
                assert self.process.stderr is not None
                error = (await self.process.stderr.read()).decode()[-2000:]
                raise AssertionError(f"access_client.mjs ended: {self.seen[-5:]} {error}")
            line: dict[str, Any] = json.loads(raw)
            self.seen.append(line)
            if line["event"] != event:
                continue
            payload = line.get("payload") or {}
            if all(_matches(payload, key, value) for key, value in match.items()):
                return line

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def _matches(payload: dict[str, Any], key: str, value: Any) -> bool:
    """`key` may reach into the payload: "ticket__status" is payload["ticket"]["status"]."""
    found: Any = payload
    for part in key.split("__"):
        if not isinstance(found, dict) or part not in found:
            return False
        found = found[part]
    return bool(found == value)
