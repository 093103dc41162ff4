"""Domain objects to wire dicts (camelCase), in one place."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.db.models import Purchase, User
from app.domain import Access, AccessSettings, iso
from app.fairness import ALGORITHM
from app.services.access import Entry, FairnessRecord, QueueState, Ticket
from app.services.auth import Session
from app.services.drops import DropView
from app.services.holds import Hold


def user(row: User) -> dict[str, Any]:
    return {"id": row.id, "email": row.email, "displayName": row.display_name, "role": row.role}


def session(value: Session) -> dict[str, Any]:
    return {
        "user": user(value.user),
        "accessToken": value.access_token,
        "refreshToken": value.refresh_token,
        "tokenType": "Bearer",
        "expiresIn": value.expires_in,
    }


def drop(view: DropView) -> dict[str, Any]:
    d, c = view.definition, view.counters
    return {
        "id": d.id,
        "name": d.name,
        "brand": d.brand,
        "imageUrl": d.image_url,
        "priceCents": d.price_cents,
        "currency": d.currency,
        "totalStock": c.total,
        "availableStock": max(c.available, 0),
        "perUserLimit": d.per_user_limit,
        "startsAt": iso(d.starts_at),
        "endsAt": iso(d.ends_at) if d.ends_at else None,
        "status": view.status.value,
        "activeReservations": c.live_holds,
        "recentBuyers": c.recent_buyers,
        "sizes": [
            {"size": s.size, "totalStock": s.total, "availableStock": max(s.available, 0)}
            for s in c.sizes
        ],
        **access_settings(d.access),
    }


def access_settings(a: AccessSettings) -> dict[str, Any]:
    """A drop's `access`, `queue` and `draw` (never its seed)."""
    return {
        "access": a.access.value,
        "queue": {"admitPerMinute": a.admit_per_minute, "passSeconds": a.pass_seconds}
        if a.access is Access.QUEUE
        else None,
        "draw": {"closesAt": iso(a.closes_at), "claimSeconds": a.claim_seconds}
        if a.access is Access.DRAW and a.closes_at is not None
        else None,
    }


def ticket(value: Ticket) -> dict[str, Any]:
    return value.to_wire()


def queue_state(value: QueueState) -> dict[str, Any]:
    return {
        "dropId": value.drop_id,
        "waiting": value.waiting,
        "admitted": value.admitted,
        "servingPosition": value.serving_position,
        "admitPerMinute": value.admit_per_minute,
        "passSeconds": value.pass_seconds,
    }


def entry(value: Entry) -> dict[str, Any]:
    return value.to_wire()


def fairness_record(value: FairnessRecord) -> dict[str, Any]:
    return {
        "dropId": value.drop_id,
        "access": value.access,
        "algorithm": ALGORITHM,
        "seedCommitment": value.seed_commitment,
        "seed": value.seed,
        "entries": value.entries,
        "orderFixedAt": iso(value.order_fixed_at) if value.order_fixed_at else None,
    }


def hold(value: Hold) -> dict[str, Any]:
    return {
        "id": value.id,
        "dropId": value.drop_id,
        "status": value.status,
        "expiresAt": iso(value.expires_at),
        "createdAt": iso(value.created_at),
        "size": value.size,
    }


def purchase(row: Purchase) -> dict[str, Any]:
    return {
        "id": row.id,
        "reservationId": row.reservation_id,
        "dropId": row.drop_id,
        "priceCents": row.price_cents,
        "currency": row.currency,
        "purchasedAt": iso(row.purchased_at),
        "size": row.size,
    }


class JSONBody(Response):
    """A JSON response serialised by orjson (fast, and UTC datetimes already rendered)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
