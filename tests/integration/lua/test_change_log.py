"""The change logs (q:changes, e:changes) under two access leaders at once.

During a lease hand-over the leader that lost its lease may not have noticed yet, so for
a moment two leaders read and mark the same log. Reading then marking used to be
separate steps, and it lost entries in two ways:

- a reader moved on by a count: two leaders that both read a page and both marked it
  dealt with moved the reader two pages on, so the second page was never pushed or
  recorded (the queue log, read from its head and trimmed by a count, lost the second
  page the same way);
- the trim was computed from places read before it ran: two marks (one per reader) that
  both saw the same places trimmed twice, dropping entries the slower reader had yet to
  read and leaving `log_base` past that reader's place.

lua/change_log.lua marks a reader's place as an absolute index (moving only forward)
and trims and reads in the same step. So each entry reaches each reader in order and at
least once; an entry reaches it twice only when two leaders read the same page before
either marked it (each pushes it: at least once, as across a failover).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from app.store.access import AccessStore, LogPage
from app.store.client import create_redis
from app.store.keys import DropKeys, new_id
from app.store.pipelined import PipelinedConnection
from app.store.scripts import Scripts
from tests.support.stores import StoreUrls

ENTRIES = 2000
ROUNDS = 40

Read = Callable[[AccessStore, str, str, int], Awaitable[LogPage]]
Mark = Callable[[AccessStore, str, str, LogPage], Awaitable[None]]


@pytest.fixture
async def leaders(stores: StoreUrls) -> AsyncIterator[tuple[AccessStore, AccessStore]]:
    """Two leaders' stores, each on its own connections, as two processes have them."""
    opened: list[tuple[Redis, PipelinedConnection]] = []
    made: list[AccessStore] = []
    for _ in range(2):
        redis = create_redis(stores.redis_url)
        pipelined = PipelinedConnection(stores.redis_url)
        opened.append((redis, pipelined))
        scripts = Scripts(redis, pipelined)
        await scripts.load_all()
        made.append(AccessStore(redis, scripts))
    try:
        yield made[0], made[1]
    finally:
        for redis, pipelined in opened:
            await pipelined.close()
            await redis.aclose(close_connection_pool=True)


# How a leader reads and marks each log (app/background/access_leader.py).


async def read_draw(store: AccessStore, drop_id: str, reader: str, most: int) -> LogPage:
    return await store.draw_log(drop_id, reader, most)


async def mark_draw(store: AccessStore, drop_id: str, reader: str, page: LogPage) -> None:
    await store.draw_log_read(drop_id, reader, page.end)


async def read_queue(store: AccessStore, drop_id: str, reader: str, most: int) -> LogPage:
    return await store.queue_log(drop_id, most)


async def mark_queue(store: AccessStore, drop_id: str, reader: str, page: LogPage) -> None:
    await store.queue_log_read(drop_id, page.end)


LOGS = {
    "draw": (read_draw, mark_draw, ("pushed", "recorded")),
    "queue": (read_queue, mark_queue, ("pushed",)),
}


def log_key(kind: str, drop_id: str) -> str:
    k = DropKeys(drop_id)
    return k.draw_changes if kind == "draw" else k.q_changes


def entry(index: int) -> str:
    """The entry appended at absolute index `index` (each test appends them in order)."""
    return f"e{index:06d}"


@pytest.mark.parametrize("kind", LOGS)
async def test_two_leaders_that_mark_the_same_page_move_the_reader_past_it_once(
    leaders: tuple[AccessStore, AccessStore], kind: str
) -> None:
    read, mark, readers = LOGS[kind]
    a, b = leaders
    drop_id = new_id()
    await a.redis.rpush(log_key(kind, drop_id), *(entry(i) for i in range(30)))
    for reader in readers:
        first = await read(a, drop_id, reader, 10)
        again = await read(b, drop_id, reader, 10)
        assert first == again == LogPage(0, [entry(i) for i in range(10)])
        await mark(a, drop_id, reader, first)
        await mark(b, drop_id, reader, again)
        assert await read(a, drop_id, reader, 10) == LogPage(10, [entry(i) for i in range(10, 20)])
    # Every reader is past the first page, and only that page is trimmed.
    assert await a.redis.lrange(log_key(kind, drop_id), 0, -1) == [entry(i) for i in range(10, 30)]


async def test_marks_of_both_readers_at_once_trim_only_what_both_have_read(
    leaders: tuple[AccessStore, AccessStore],
) -> None:
    """One leader marks the pushes while the other marks the records, at the same time:
    the list is trimmed once, behind both, never past the slower reader."""
    a, b = leaders
    for _ in range(ROUNDS):
        drop_id = new_id()
        await a.redis.rpush(DropKeys(drop_id).draw_changes, *(entry(i) for i in range(30)))
        pushed = await a.draw_log(drop_id, "pushed", 10)
        recorded = await b.draw_log(drop_id, "recorded", 10)
        await asyncio.gather(
            a.draw_log_read(drop_id, "pushed", pushed.end),
            b.draw_log_read(drop_id, "recorded", recorded.end),
        )
        for reader in ("pushed", "recorded"):
            assert await a.draw_log(drop_id, reader, 10) == LogPage(
                10, [entry(i) for i in range(10, 20)]
            )
        assert await a.redis.llen(DropKeys(drop_id).draw_changes) == 20
        assert await a.redis.hget(DropKeys(drop_id).draw, "log_base") == "10"


async def _leader(
    store: AccessStore,
    drop_id: str,
    read: Read,
    mark: Mark,
    readers: tuple[str, ...],
    rng: random.Random,
    seen: dict[str, list[LogPage]],
    appended: asyncio.Event,
) -> None:
    """Read and mark pages of random sizes, yielding at random between the two, until
    every entry was appended and no reader has anything left to read."""
    idle = 0
    while idle < 3:
        idle = idle + 1 if appended.is_set() else 0
        for reader in readers:
            page = await read(store, drop_id, reader, rng.randint(1, 40))
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            if page.entry_ids:
                idle = 0
                seen[reader].append(page)
                await mark(store, drop_id, reader, page)
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", LOGS)
async def test_overlapping_leaders_lose_no_entry_and_misplace_none(
    leaders: tuple[AccessStore, AccessStore], kind: str
) -> None:
    """Two leaders step through the log at random while entries are appended: each reader
    is given every entry, each page holds the entries at its own indexes (none misplaced
    by a trim it did not see), and in the end the list is trimmed to nothing."""
    read, mark, readers = LOGS[kind]
    a, b = leaders
    drop_id = new_id()
    seed = random.randrange(1 << 30)
    seen: dict[str, list[LogPage]] = {reader: [] for reader in readers}
    appended = asyncio.Event()

    async def append() -> None:
        rng = random.Random(seed)
        index = 0
        while index < ENTRIES:
            batch = [entry(i) for i in range(index, min(index + rng.randint(1, 60), ENTRIES))]
            await a.redis.rpush(log_key(kind, drop_id), *batch)
            index += len(batch)
            await asyncio.sleep(0)
        appended.set()

    await asyncio.wait_for(
        asyncio.gather(
            append(),
            _leader(a, drop_id, read, mark, readers, random.Random(seed + 1), seen, appended),
            _leader(b, drop_id, read, mark, readers, random.Random(seed + 2), seen, appended),
        ),
        30,
    )
    for reader, pages in seen.items():
        for page in pages:
            wanted = [entry(i) for i in range(page.start, page.end)]
            assert page.entry_ids == wanted, f"seed {seed}: {reader} read a misplaced page"
        given = {entry_id for page in pages for entry_id in page.entry_ids}
        lost = ENTRIES - len(given)
        assert lost == 0, f"seed {seed}: {reader} was never given {lost} entries"
    assert await a.redis.llen(log_key(kind, drop_id)) == 0
