"""The pre-queue's order owes nothing to when one joined, and anyone can recompute it.

A thousand accounts join a queue drop in a known order before startsAt (every tenth
through the route, the rest through the service on the same Redis, for speed). At the
start the published order must be uncorrelated with the joining order, be exactly the
rule's order under the revealed seed, and be what PostgreSQL recorded.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from app import fairness
from app.container import Container
from app.verify_order import problems
from tests.support.access import (
    bulk_users,
    fixed_record,
    from_now,
    iso,
    published_entries,
    queue_drop,
    spearman,
)
from tests.support.factories import admin_token, auth, signup

ENTRANTS = 1000
THROUGH_API_EVERY = 10


async def test_a_thousand_joiners_get_an_order_unrelated_to_when_they_joined(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    # Far enough ahead for the joining; moved to just ahead once everyone is in.
    drop = await queue_drop(client, admin, starts_in=120, admit_per_minute=1)
    drop_id = drop["id"]
    api_users = [await signup(client) for _ in range(ENTRANTS // THROUGH_API_EVERY)]
    bulk = iter(await bulk_users(container, ENTRANTS - len(api_users)))
    tokens: dict[str, str] = {}  # user id -> token, for the ones who joined through the API
    joined: list[tuple[str, str]] = []  # (user id, entry id) in joining order
    for i in range(ENTRANTS):
        if i % THROUGH_API_EVERY == 0:
            session = api_users[i // THROUGH_API_EVERY]
            response = await client.post(
                f"/api/drops/{drop_id}/queue", headers=auth(session["accessToken"])
            )
            assert response.status_code == 201, response.text
            ticket: dict[str, Any] = response.json()
            user_id = session["user"]["id"]
            tokens[user_id] = session["accessToken"]
        else:
            user_id = next(bulk)
            made, created = await container.access_service.join(user_id, drop_id)
            assert created
            ticket = made.to_wire()
        assert ticket["status"] == "waiting"
        assert ticket["position"] is None
        assert ticket["ahead"] is None
        assert ticket["estimatedWaitSeconds"] is None
        joined.append((user_id, ticket["entryId"]))

    before = (await client.get(f"/api/drops/{drop_id}/fairness")).json()
    assert before["seed"] is None
    assert before["orderFixedAt"] is None
    assert (await client.get(f"/api/drops/{drop_id}/fairness/entries")).status_code == 409
    moved = await client.patch(
        f"/api/drops/{drop_id}", json={"startsAt": iso(from_now(0.3))}, headers=auth(admin)
    )
    assert moved.status_code == 200, moved.text

    record = await fixed_record(client, drop_id)
    entries = await published_entries(client, drop_id)
    assert record["entries"] == ENTRANTS == len(entries)
    assert record["seedCommitment"] == before["seedCommitment"]
    assert problems(record, entries, drop_id) == []
    seed = bytes.fromhex(record["seed"])
    assert hashlib.sha256(seed).hexdigest() == before["seedCommitment"]
    recomputed = fairness.order(seed, [entry_id for _, entry_id in joined])
    assert [
        {"entryId": e, "rankKey": k, "position": p} for p, (e, k) in enumerate(recomputed, 1)
    ] == entries

    position_of = {e["entryId"]: e["position"] for e in entries}
    owner_of = {entry_id: user_id for user_id, entry_id in joined}
    rho = spearman(list(range(ENTRANTS)), [position_of[e] for _, e in joined])
    print(f"pre-queue order: Spearman {rho:+.4f} between join order and position")
    assert abs(rho) < 0.1, f"join order and position correlate: Spearman {rho:.4f}"

    # Each joiner sees the published position on their own ticket.
    for user_id, token in tokens.items():
        mine = (await client.get(f"/api/drops/{drop_id}/queue/me", headers=auth(token))).json()
        assert owner_of[mine["entryId"]] == user_id
        assert mine["position"] == position_of[mine["entryId"]]
        assert mine["status"] == "waiting"
        assert mine["ahead"] == mine["position"] - 1
        assert mine["estimatedWaitSeconds"] == (mine["position"] - 1) * 60

    # PostgreSQL has the same order, each entry with its owner, and when it was fixed.
    async with container.db.sales.transaction() as conn:
        rows = await conn.fetch(
            "SELECT entry_id, user_id, rank_key, position, outcome FROM access_entries"
            " WHERE drop_id = $1 ORDER BY position",
            drop_id,
        )
        fixed_at = await conn.fetchval("SELECT order_fixed_at FROM drops WHERE id = $1", drop_id)
    assert [(r["entry_id"], r["rank_key"], r["position"]) for r in rows] == [
        (e["entryId"], e["rankKey"], e["position"]) for e in entries
    ]
    assert all(r["user_id"] == owner_of[r["entry_id"]] for r in rows)
    assert all(r["outcome"] is None for r in rows)
    assert fixed_at is not None
    assert iso(fixed_at).startswith(record["orderFixedAt"][:19])
