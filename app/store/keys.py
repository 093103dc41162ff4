"""Every Redis key name, built in one place.

All keys of one drop share the hash tag `{d:<dropId>}`, so each script touches one
Redis Cluster slot. A reservation id embeds its drop id and its owner's id
(`<dropId>.<userId>.<random>`), so any layer holding only the id (a keyspace event,
the sweeper, a purchase request) finds the drop's slot and the owner's keys
without a look-up.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from app.runtime.randomness import token_hex

DROP_INDEX = "sneakerdrop:drops"  # zset: drop id -> startsAt (ms); every mirrored drop
DROP_INDEX_LOADED = "sneakerdrop:drops:loaded"  # set once the index was rebuilt from PostgreSQL
DROP_LISTING_VERSION = "sneakerdrop:drops:version"  # bumped by every admin change of a drop
SWEEPER_LEASE = "sneakerdrop:lease:sweeper"
RECONCILER_LEASE = "sneakerdrop:lease:reconciler"
BROADCASTER_LEASE = "sneakerdrop:lease:broadcaster"
ACCESS_LEASE = "sneakerdrop:lease:access"
ACCESS_DROPS = "sneakerdrop:access_drops"  # set: queue and draw drops the access leader tends

_HEX16 = "[0-9a-f]{16}"
# `\Z`, not `$`: `$` also matches before a trailing newline, so "<id>\n" (a path's %0A)
# passed as an id and broke the reservation id built from it.
DROP_ID_RE = re.compile(rf"^{_HEX16}\Z")
HOLD_ID_RE = re.compile(rf"^({_HEX16})\.({_HEX16})\.([0-9a-f]{{16}})\Z")
TIMER_KEY_RE = re.compile(rf"^\{{d:({_HEX16})\}}:t:({_HEX16}\.{_HEX16}\.[0-9a-f]{{16}})\Z")


def new_id() -> str:
    """A random 64-bit id in hex: users, drops."""
    return token_hex(8)


def new_hold_id(drop_id: str, user_id: str) -> str:
    """A hold's id (on the wire: a reservation id); see the module docstring."""
    return f"{drop_id}.{user_id}.{token_hex(8)}"


@dataclass(frozen=True, slots=True)
class HoldRef:
    drop_id: str
    user_id: str
    hold_id: str


def parse_hold_id(value: str) -> HoldRef | None:
    match = HOLD_ID_RE.match(value)
    if not match:
        return None
    return HoldRef(match.group(1), match.group(2), value)


def parse_timer_key(key: str) -> HoldRef | None:
    """The reservation a hold-timer key belongs to (for keyspace expiry events)."""
    match = TIMER_KEY_RE.match(key)
    return parse_hold_id(match.group(2)) if match else None


class DropKeys:
    """The keys of one drop."""

    __slots__ = (
        "buyers",
        "closed",
        "closed_at",
        "draw",
        "draw_changes",
        "draw_entries",
        "draw_order",
        "draw_users",
        "drop",
        "drop_id",
        "due",
        "hold_sizes",
        "holds",
        "q",
        "q_changes",
        "q_late",
        "q_passes",
        "q_pre",
        "q_tix",
        "q_users",
        "sizes",
        "tag",
        "users",
    )

    def __init__(self, drop_id: str) -> None:
        self.drop_id = drop_id
        self.tag = f"{{d:{drop_id}}}"
        self.drop = f"{self.tag}:drop"
        self.users = f"{self.tag}:users"
        self.holds = f"{self.tag}:holds"
        self.due = f"{self.tag}:due"
        self.closed = f"{self.tag}:closed"
        self.closed_at = f"{self.tag}:closed_at"
        self.buyers = f"{self.tag}:buyers"
        self.sizes = f"{self.tag}:sizes"  # a sized drop's per-size counters (reserve.lua)
        self.hold_sizes = f"{self.tag}:hold_sizes"  # reservation id -> size index
        # A queue drop's waiting room (lua/queue_join.lua, lua/queue_admit.lua).
        self.q = f"{self.tag}:q"  # hash: served, late, clock, carry, log_* (change_log.lua)
        self.q_users = f"{self.tag}:q:users"  # user id -> entry id
        self.q_tix = f"{self.tag}:q:tix"  # entry id -> ticket
        self.q_pre = f"{self.tag}:q:pre"  # the pre-queue, ordered by rank key
        self.q_late = f"{self.tag}:q:late"  # position -> entry id, for joins after startsAt
        self.q_passes = f"{self.tag}:q:passes"  # entry id -> pass end (ms)
        self.q_changes = f"{self.tag}:q:changes"  # entry ids admitted or whose pass ended
        # A draw drop's entries (lua/draw_enter.lua, lua/draw_run.lua, lua/draw_settle.lua).
        self.draw = f"{self.tag}:e"  # hash: cursor, drawn_at, done, log_* (change_log.lua)
        self.draw_users = f"{self.tag}:e:users"  # user id -> entry id
        self.draw_entries = f"{self.tag}:e:ent"  # entry id -> entry
        self.draw_order = f"{self.tag}:e:pre"  # every entry, ordered by rank key
        self.draw_changes = f"{self.tag}:e:changes"  # entry ids whose status changed

    def timer(self, hold_id: str) -> str:
        return f"{self.tag}:t:{hold_id}"

    def user_holds(self, user_id: str) -> str:
        return f"{self.tag}:u:{user_id}"

    def standby(self, size_index: str) -> str:
        """zset: a draw's standby entries for one size ('0' on a drop without sizes),
        scored by position (built inside lua/draw_run.lua and lua/draw_settle.lua)."""
        return f"{self.tag}:e:sb:{size_index}"

    def cooldown(self, user_id: str) -> str:
        """Present (with a TTL) while this user may not reserve in this drop again."""
        return f"{self.tag}:cd:{user_id}"

    def all_static(self) -> list[str]:
        return [
            self.drop,
            self.users,
            self.holds,
            self.due,
            self.closed,
            self.closed_at,
            self.buyers,
            self.sizes,
            self.hold_sizes,
            self.q,
            self.q_users,
            self.q_tix,
            self.q_pre,
            self.q_late,
            self.q_passes,
            self.q_changes,
            self.draw,
            self.draw_users,
            self.draw_entries,
            self.draw_order,
            self.draw_changes,
        ]


def revoked_session(session_id: str) -> str:
    return f"sneakerdrop:revoked:{session_id}"


def rate_bucket(name: str, subject: str, window: int) -> str:
    return f"sneakerdrop:rl:{name}:{subject}:{window}"


def login_limits(email: str, address: str, pair_window: int, account_window: int) -> list[str]:
    """KEYS of login_check.lua and login_refund.lua: this account's failed logins from this
    address and from every address (one counter per window), and the addresses that signed
    in to it. One hash tag per account, a digest of its email (an email may hold braces)."""
    tag = "{l:" + hashlib.sha256(email.encode()).hexdigest()[:16] + "}"
    return [
        f"sneakerdrop:login:{tag}:fail:{address}:{pair_window}",
        f"sneakerdrop:login:{tag}:fail:*:{account_window}",
        f"sneakerdrop:login:{tag}:known",
    ]


def idempotency(user_id: str, digest: str) -> str:
    return f"sneakerdrop:idem:{user_id}:{digest}"


def worker_address(worker_id: str) -> str:
    """string: `host:port` of a worker's internal Socket.IO listener (app/store/workers.py)."""
    return f"sneakerdrop:worker:{worker_id}"
