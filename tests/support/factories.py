"""Plain async factories and checks shared by the tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import select

from app.background.reconciler import Reconciler
from app.container import Container
from app.db.models import Drop, Purchase
from app.store.entries import parse_entry
from app.store.keys import DropKeys, parse_hold_id

PASSWORD = "correct-horse-battery"
_counter = iter(range(1, 10**9))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(
    client: httpx.AsyncClient, email: str | None = None, **extra: Any
) -> dict[str, Any]:
    email = email or f"user{next(_counter)}@example.com"
    response = await client.post(
        "/api/auth/signup", json={"email": email, "password": PASSWORD, **extra}
    )
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def admin_token(client: httpx.AsyncClient, container: Container) -> str:
    email = f"admin{next(_counter)}@example.com"
    await container.auth_service.ensure_admin(email, PASSWORD)
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


async def create_drop(client: httpx.AsyncClient, admin: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Test Runner", "priceCents": 12000, "totalStock": 10}
    body.update(fields)
    for key in ("startsAt", "endsAt"):
        if isinstance(body.get(key), datetime):
            body[key] = body[key].isoformat().replace("+00:00", "Z")
    response = await client.post("/api/drops", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text
    drop: dict[str, Any] = response.json()
    return drop


def in_future(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def assert_invariant(
    container: Container, drop_id: str | None = None, *, allow_stale_claims: bool = False
) -> None:
    """Every drop (or just `drop_id`) is whole, in PostgreSQL and in Redis:

    - available + live holds + purchases == total, and Redis agrees with PostgreSQL
      (the reconciler's check, as `sneakerdrop check` runs it);
    - the drop's live holds are in step with each other and with PostgreSQL
      (`assert_holds_in_step`): holds hash and due set, per-user counts and limit,
      claim deadlines, timers.

    `allow_stale_claims`: a PURCHASING hold may be past its claim deadline, for a
    caller that asserts right after a purchaser died and before the sweeper came by.
    """
    checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    wanted = [c for c in checks if drop_id is None or c.drop_id == drop_id]
    if drop_id is not None:
        assert wanted, f"drop {drop_id} not in PostgreSQL"
    for check in wanted:
        assert check.total is not None, f"drop {check.drop_id} missing from Redis"
        assert check.available >= 0, check
        assert check.available + check.live_holds + check.sold_pg == check.total_pg, check
        assert check.sold == check.sold_pg, check
        assert check.healthy, check
    facts = await _drop_facts(container, [c.drop_id for c in wanted])
    for check in wanted:
        limit, purchases = facts[check.drop_id]
        await assert_holds_in_step(
            container.redis,
            check.drop_id,
            limit=limit,
            purchases=purchases,
            allow_stale_claims=allow_stale_claims,
        )


async def _drop_facts(
    container: Container, drop_ids: list[str]
) -> dict[str, tuple[int, dict[str, str]]]:
    """Per drop, from PostgreSQL: its per-user limit and its purchases (reservation -> user)."""
    if not drop_ids:
        return {}
    async with container.db.begin() as session:
        limit_rows = await session.execute(
            select(Drop.id, Drop.per_user_limit).where(Drop.id.in_(drop_ids))
        )
        limits = {drop: int(limit) for drop, limit in limit_rows.all()}
        sold = await session.execute(
            select(Purchase.drop_id, Purchase.reservation_id, Purchase.user_id).where(
                Purchase.drop_id.in_(drop_ids)
            )
        )
        purchases: dict[str, dict[str, str]] = {d: {} for d in drop_ids}
        for drop, reservation_id, user_id in sold.all():
            purchases[drop][reservation_id] = user_id
    return {d: (limits[d], purchases[d]) for d in drop_ids}


# How long past its claim deadline a PURCHASING hold may still sit: the sweeper settles it
# on its next pass (SWEEP_INTERVAL_MS, 500 ms by default), so a few seconds is ample.
CLAIM_GRACE_MS = 3_000
# A timer key is written in the same script as the deadline, but Redis expires keys by the
# script's start time while the deadline is computed from TIME: a few ms either way.
TIMER_SLACK_MS = 50

# One atomic read of everything a drop's live holds are kept in, so a release or a
# reserve running meanwhile (a background layer) cannot show a half-done state.
# KEYS: holds, due, users, drop, hold_sizes, sizes; ARGV[1]: the timer keys' prefix,
# ARGV[2]: the user-holds sets' prefix (both from app/store/keys.py).
_SNAPSHOT_LUA = """
local t = redis.call('TIME')
local holds = redis.call('HGETALL', KEYS[1])
local due = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local users = redis.call('HGETALL', KEYS[3])
local drop = redis.call('HMGET', KEYS[4], 'total', 'avail', 'sold', 'limit')
local timers = {}
local owners = {}
for i = 1, #holds, 2 do
  timers[#timers + 1] = redis.call('PTTL', ARGV[1] .. holds[i])
  owners[string.match(holds[i + 1], '^%u+|([^|]*)|') or ''] = true
end
for i = 1, #users, 2 do
  owners[users[i]] = true
end
local sets = {}
for user, _ in pairs(owners) do
  sets[#sets + 1] = {user, redis.call('SMEMBERS', ARGV[2] .. user)}
end
local hold_sizes = redis.call('HKEYS', KEYS[5])
local sized = redis.call('EXISTS', KEYS[6])
return {t, holds, due, users, drop, timers, sets, hold_sizes, sized}
"""


@dataclass
class HoldsSnapshot:
    """A drop's live-hold keys as read in one step."""

    now_ms: int
    holds: dict[str, str]  # reservation id -> raw entry
    due: dict[str, float]  # reservation id -> deadline
    users: dict[str, int]  # user id -> live holds + purchases (what reserve.lua counts)
    counters: tuple[int | None, int | None, int | None, int | None]  # total, avail, sold, limit
    timers: dict[str, int]  # reservation id -> PTTL of its timer key (-2: none)
    user_sets: dict[str, set[str]] = field(default_factory=dict)  # user id -> live hold ids
    hold_sizes: set[str] = field(default_factory=set)  # reservation ids with a size index
    sized: bool = False  # the drop sells sizes (it has per-size counters)


async def read_holds(redis: Redis, drop_id: str) -> HoldsSnapshot:
    keys = DropKeys(drop_id)
    reply = await redis.eval(
        _SNAPSHOT_LUA,
        6,
        keys.holds,
        keys.due,
        keys.users,
        keys.drop,
        keys.hold_sizes,
        keys.sizes,
        keys.timer(""),
        keys.user_holds(""),
    )
    time, holds, due, users, drop, timers, sets, hold_sizes, sized = reply

    def pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
        return list(zip(flat[::2], flat[1::2], strict=True))

    hold_map = {str(k): str(v) for k, v in pairs(holds)}
    return HoldsSnapshot(
        now_ms=int(time[0]) * 1000 + int(time[1]) // 1000,
        holds=hold_map,
        due={str(k): float(v) for k, v in pairs(due)},
        users={str(k): int(v) for k, v in pairs(users)},
        counters=tuple(None if v is None else int(v) for v in drop),  # type: ignore[arg-type]
        timers={rid: int(ttl) for rid, ttl in zip(hold_map, timers, strict=True)},
        user_sets={str(user): {str(m) for m in members} for user, members in sets},
        hold_sizes={str(rid) for rid in hold_sizes},
        sized=bool(sized),
    )


async def assert_holds_in_step(
    redis: Redis,
    drop_id: str,
    *,
    limit: int | None = None,
    purchases: Mapping[str, str] | None = None,
    allow_stale_claims: bool = False,
) -> HoldsSnapshot:
    """One drop's live holds, read from Redis in one step, are consistent:

    - avail + live holds + sold == total in the drop hash, avail >= 0;
    - the holds hash and the due set hold exactly the same reservation ids, and so does
      the size index of a sized drop (no size entry outlives its hold on any drop);
    - each entry is well formed, ACTIVE or PURCHASING, owned by the user its id names;
    - an ACTIVE hold's due score is its expiresAt, and before that deadline its timer key
      exists with a TTL no longer than the time left;
    - a PURCHASING hold's due score (its claim deadline) has not passed by more than
      CLAIM_GRACE_MS (unless `allow_stale_claims`);
    - per user, live holds plus purchases (`purchases`: reservation id -> user id, from
      PostgreSQL; one reservation counted once) equal the users hash's count, which is
      what reserve.lua checks, and stay within the per-user limit (`limit`, else the
      drop hash's); each user's set of live holds lists exactly their live holds;
    - a purchased reservation is not ACTIVE (only PURCHASING, while its commit is due).

    Returns the snapshot it checked.
    """
    purchases = purchases or {}
    snap = await read_holds(redis, drop_id)
    problems: list[str] = []
    total, avail, sold, redis_limit = snap.counters
    assert total is not None, f"drop {drop_id} not mirrored in Redis"
    assert avail is not None, f"drop {drop_id}: no avail counter"
    if avail < 0 or avail + len(snap.holds) + (sold or 0) != total:
        problems.append(
            f"counters: avail {avail} + holds {len(snap.holds)} + sold {sold} != total {total}"
        )
    if limit is not None and redis_limit != limit:
        problems.append(f"per-user limit in Redis {redis_limit}, in PostgreSQL {limit}")
    limit = limit if limit is not None else redis_limit

    only_held = sorted(set(snap.holds) - set(snap.due))
    only_due = sorted(set(snap.due) - set(snap.holds))
    if only_held:
        problems.append(f"live holds without a due entry: {only_held[:5]} ({len(only_held)})")
    if only_due:
        problems.append(f"due entries without a live hold: {only_due[:5]} ({len(only_due)})")
    sizeless = sorted(set(snap.holds) - snap.hold_sizes) if snap.sized else []
    if sizeless:
        problems.append(f"live holds without a size: {sizeless[:5]} ({len(sizeless)})")
    stale_sizes = sorted(snap.hold_sizes - set(snap.holds))
    if stale_sizes:
        problems.append(f"sizes of no live hold: {stale_sizes[:5]} ({len(stale_sizes)})")

    units: dict[str, set[str]] = defaultdict(set)  # user -> reservations held or bought
    live_of: dict[str, set[str]] = defaultdict(set)
    for rid, user in purchases.items():
        units[user].add(rid)
    for rid, raw in snap.holds.items():
        ref = parse_hold_id(rid)
        try:
            entry = parse_entry(raw)
        except ValueError:
            problems.append(f"{rid}: malformed entry {raw!r}")
            continue
        if ref is None or ref.drop_id != drop_id or ref.user_id != entry.user_id:
            problems.append(f"{rid}: id does not name this drop and the entry's user {raw!r}")
        units[entry.user_id].add(rid)
        live_of[entry.user_id].add(rid)
        due = snap.due.get(rid)
        if entry.state == "ACTIVE":
            if rid in purchases:
                problems.append(f"{rid}: purchased (PostgreSQL) but ACTIVE in Redis")
            if due is not None and due != entry.expires_at_ms:
                problems.append(f"{rid}: ACTIVE, due at {due:.0f}, expires {entry.expires_at_ms}")
            left = entry.expires_at_ms - snap.now_ms
            ttl = snap.timers[rid]
            if left > TIMER_SLACK_MS and ttl <= 0:
                problems.append(f"{rid}: ACTIVE with {left} ms left but no timer (PTTL {ttl})")
            if ttl > max(left, 0) + TIMER_SLACK_MS:
                problems.append(f"{rid}: timer outlives the hold: PTTL {ttl}, {left} ms left")
        elif entry.state == "PURCHASING":
            late = snap.now_ms - (due if due is not None else float("-inf"))
            if not allow_stale_claims and late > CLAIM_GRACE_MS:
                problems.append(f"{rid}: PURCHASING {late:.0f} ms past its claim deadline")
        else:
            problems.append(f"{rid}: a live hold in state {entry.state}")

    for user in sorted(set(units) | set(snap.users)):
        count = len(units.get(user, ()))
        if snap.users.get(user, 0) != count:
            problems.append(
                f"user {user}: users hash says {snap.users.get(user)}, "
                f"live holds + purchases are {count}"
            )
        if limit is not None and count > limit:
            problems.append(f"user {user}: {count} held or bought, over the limit {limit}")
    for user in sorted(set(live_of) | set(snap.user_sets)):
        listed = snap.user_sets.get(user, set())
        if listed != live_of.get(user, set()):
            problems.append(
                f"user {user}: live-hold set {sorted(listed)}, live holds {sorted(live_of[user])}"
            )
    assert not problems, f"drop {drop_id}:\n  " + "\n  ".join(problems[:20])
    return snap
