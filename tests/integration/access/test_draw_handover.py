"""A draw's hand-overs and losses on a sized drop with fallbacks, through the API.

The published order is random, so each test builds the contract's outcome from it with
a reference model (tests/support/access.py, DrawModel) and checks the server against
it: who won which size, which standby entry a cancelled or expired hold goes to (with
a fresh claimSeconds), who is lost once their sizes are bought out or the drop ends;
and that PostgreSQL's record follows. The invariant holds after each scenario.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.container import Container
from tests.support.access import (
    DrawModel,
    ModelEntry,
    draw_drop,
    eventually,
    fixed_record,
    hold_of,
    iso,
    my_entry,
    parse_iso,
    published_entries,
)
from tests.support.factories import admin_token, assert_invariant, auth, signup

NINE, TEN = "US 9", "US 10"
# What each entrant asks for: size, then fallbacks.
ASKS: list[tuple[str, ...]] = [
    (NINE,),
    (TEN,),
    (NINE, TEN),
    (TEN, NINE),
    (NINE,),
    (TEN,),
    (NINE, TEN),
]


class Draw:
    """One sized draw drop, its entrants (token by entry id) and the model of it."""

    def __init__(self, drop: dict[str, Any]) -> None:
        self.drop = drop
        self.id: str = drop["id"]
        self.tokens: dict[str, str] = {}
        self.asks: dict[str, tuple[str, ...]] = {}
        self.model: DrawModel | None = None
        self.bought: set[str] = set()  # entries whose hold was purchased

    async def enter(self, client: httpx.AsyncClient, asks: list[tuple[str, ...]]) -> None:
        for sizes in asks:
            user = await signup(client)
            body = {"size": sizes[0], "fallbackSizes": list(sizes[1:])}
            response = await client.post(
                f"/api/drops/{self.id}/entries", json=body, headers=auth(user["accessToken"])
            )
            assert response.status_code == 201, response.text
            entry = response.json()
            assert entry["status"] == "entered"
            assert entry["position"] is None
            assert (entry["size"], tuple(entry["fallbackSizes"])) == (sizes[0], sizes[1:])
            self.tokens[entry["entryId"]] = user["accessToken"]
            self.asks[entry["entryId"]] = sizes

    async def drawn(self, client: httpx.AsyncClient, stock: dict[str, int]) -> DrawModel:
        """Wait for the draw; check every entry against the model of the published order."""
        await fixed_record(client, self.id)

        async def all_drawn() -> bool:
            entries = [await self.entry(client, e) for e in self.tokens]
            return all(e["status"] != "entered" for e in entries)

        await eventually(all_drawn)
        listed = await published_entries(client, self.id)
        assert sorted(e["entryId"] for e in listed) == sorted(self.tokens)
        self.model = DrawModel(
            stock,
            [ModelEntry(e["entryId"], e["position"], self.asks[e["entryId"]]) for e in listed],
        )
        await self.agrees(client, 0)
        return self.model

    async def entry(self, client: httpx.AsyncClient, entry_id: str) -> dict[str, Any]:
        return await my_entry(client, self.id, self.tokens[entry_id])

    async def mismatches(self, client: httpx.AsyncClient) -> list[str]:
        """Where the server's entries (and winners' live holds) differ from the model."""
        assert self.model is not None
        found: list[str] = []
        for expected in self.model.entries:
            if expected.status == "released":
                continue  # the contract says nothing of a winner whose hold ended
            entry = await self.entry(client, expected.entry_id)
            if (entry["position"], entry["status"]) != (expected.position, expected.status):
                found.append(f"{entry} but the model has {expected}")
            elif expected.status != "won":
                if entry["reservationId"] is not None:
                    found.append(f"{entry} has a reservationId")
            elif expected.entry_id not in self.bought:
                live = await client.get(
                    "/api/me/reservations", headers=auth(self.tokens[expected.entry_id])
                )
                holds = [h for h in live.json() if h["id"] == entry["reservationId"]]
                if [(h["size"], h["status"]) for h in holds] != [(expected.size, "ACTIVE")]:
                    found.append(f"{entry}: its live holds {holds}, the model {expected}")
        return found

    async def agrees(self, client: httpx.AsyncClient, within: float = 3) -> None:
        """The server comes to match the model within `within` seconds."""

        async def same() -> bool:
            return not await self.mismatches(client)

        try:
            await eventually(same, within)
        except AssertionError:
            raise AssertionError("\n".join(await self.mismatches(client))) from None

    async def buy(self, client: httpx.AsyncClient, entry_id: str) -> None:
        """The winner of `entry_id` buys its hold."""
        assert self.model is not None
        token = self.tokens[entry_id]
        reservation_id = (await self.entry(client, entry_id))["reservationId"]
        bought = await client.post(
            f"/api/reservations/{reservation_id}/purchase", headers=auth(token)
        )
        assert bought.status_code == 201, bought.text
        self.bought.add(entry_id)
        self.model.buy(entry_id)

    async def outcomes(self, container: Container) -> dict[str, tuple[str | None, str | None]]:
        async with container.db.sales.transaction() as conn:
            rows = await conn.fetch(
                "SELECT entry_id, outcome, reservation_id FROM access_entries WHERE drop_id = $1",
                self.id,
            )
        return {r["entry_id"]: (r["outcome"], r["reservation_id"]) for r in rows}

    async def recorded(self, client: httpx.AsyncClient, container: Container) -> None:
        """PostgreSQL's outcomes come to match every entry's status (the leader records)."""

        async def same() -> bool:
            found = await self.outcomes(container)
            for entry_id in self.tokens:
                entry = await self.entry(client, entry_id)
                if found.get(entry_id) != (entry["status"], entry["reservationId"]):
                    return False
            return True

        await eventually(same, 5)


def _sized(nine: int, ten: int) -> dict[str, Any]:
    return {
        "totalStock": nine + ten,
        "sizes": [{"size": NINE, "totalStock": nine}, {"size": TEN, "totalStock": ten}],
    }


async def test_a_cancelled_hold_passes_to_the_first_standby_entry_for_its_size_then_buy_outs_lose(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    draw = Draw(await draw_drop(client, admin, closes_in=1.5, claim_seconds=60, **_sized(1, 1)))
    await draw.enter(client, ASKS)
    model = await draw.drawn(client, {NINE: 1, TEN: 1})
    await draw.recorded(client, container)
    await assert_invariant(container, draw.id)
    async with container.db.sales.transaction() as conn:
        fixed_at = await conn.fetchval("SELECT order_fixed_at FROM drops WHERE id = $1", draw.id)
    assert fixed_at is not None

    # The first winner cancels: its unit goes to the first standby entry asking its size.
    first = next(e for e in model.entries if e.status == "won")
    first_entry = await draw.entry(client, first.entry_id)
    old = await hold_of(client, draw.tokens[first.entry_id], first_entry["reservationId"])
    cancelled_at = datetime.now(UTC)
    cancelled = await client.delete(
        f"/api/reservations/{first_entry['reservationId']}",
        headers=auth(draw.tokens[first.entry_id]),
    )
    assert cancelled.status_code == 204, cancelled.text
    released = first.size
    taker = model.release(first.entry_id)
    assert taker is not None, "the asks always leave a standby entry for each size"
    await draw.agrees(client)
    won = await draw.entry(client, taker.entry_id)
    new = await hold_of(client, draw.tokens[taker.entry_id], won["reservationId"])
    assert new["size"] == released == old["size"]
    expires = parse_iso(new["expiresAt"])
    assert expires > parse_iso(old["expiresAt"])
    latest = datetime.now(UTC) + timedelta(seconds=60)
    assert cancelled_at + timedelta(seconds=59.9) <= expires <= latest
    await draw.recorded(client, container)
    await assert_invariant(container, draw.id)

    # The US 9 unit bought: whoever asked for US 9 alone is lost; whoever also asked for
    # US 10 waits on while a US 10 hold lives. Then the US 10 unit: everyone is lost.
    for size in (NINE, TEN):
        holder = next(e for e in model.entries if e.status == "won" and e.size == size)
        await draw.buy(client, holder.entry_id)
        if size == NINE:
            assert any(e.status == "standby" for e in model.entries), "the asks keep one waiting"
        await draw.agrees(client)
        await draw.recorded(client, container)
    assert not any(e.status == "standby" for e in model.entries)
    assert (await client.get(f"/api/drops/{draw.id}")).json()["status"] == "sold_out"
    await assert_invariant(container, draw.id)


async def test_an_expired_hold_passes_to_the_first_standby_entry_with_a_fresh_claim(
    client: httpx.AsyncClient, container: Container
) -> None:
    claim = 3
    admin = await admin_token(client, container)
    draw = Draw(await draw_drop(client, admin, closes_in=1.5, claim_seconds=claim, **_sized(1, 2)))
    await draw.enter(client, ASKS)
    model = await draw.drawn(client, {NINE: 1, TEN: 2})
    winners = [e for e in model.entries if e.status == "won"]
    assert len(winners) == 3
    # The later winners buy; the first lets its claim run out.
    lapser = winners[0]
    for keeper in winners[1:]:
        await draw.buy(client, keeper.entry_id)
    await draw.agrees(client)
    lapsed_entry = await draw.entry(client, lapser.entry_id)
    lapsed = await hold_of(client, draw.tokens[lapser.entry_id], lapsed_entry["reservationId"])
    drawn_expiry = parse_iso(lapsed["expiresAt"])
    released = lapser.size
    taker = model.release(lapser.entry_id)
    assert taker is not None, "the asks always leave a standby entry for each size"
    await draw.agrees(client, claim + 3)
    won = await draw.entry(client, taker.entry_id)
    new = await hold_of(client, draw.tokens[taker.entry_id], won["reservationId"])
    assert new["size"] == released
    # A fresh claim: it starts when the old hold ended, not at the draw.
    assert parse_iso(new["expiresAt"]) - drawn_expiry >= timedelta(seconds=claim - 0.1)
    await draw.recorded(client, container)
    await draw.buy(client, taker.entry_id)
    assert not any(e.status == "standby" for e in model.entries)  # everything is sold
    await draw.agrees(client)
    await draw.recorded(client, container)
    await assert_invariant(container, draw.id)


async def test_standby_entries_are_lost_when_the_drop_ends_and_a_won_hold_lives_on(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    now = datetime.now(UTC)
    draw = Draw(
        await draw_drop(
            client,
            admin,
            closes_in=1.5,
            claim_seconds=600,
            endsAt=iso(now + timedelta(seconds=3)),
            **_sized(1, 1),
        )
    )
    await draw.enter(client, ASKS[:4])
    model = await draw.drawn(client, {NINE: 1, TEN: 1})
    assert [e.status for e in model.entries].count("standby") == 2
    model.end()
    await draw.agrees(client, 5)  # the winners' holds are still live
    assert (await client.get(f"/api/drops/{draw.id}")).json()["status"] == "ended"
    await draw.recorded(client, container)
    winner = next(e for e in model.entries if e.status == "won")
    await draw.buy(client, winner.entry_id)
    await assert_invariant(container, draw.id)


async def test_cancelling_a_drawn_drop_cancels_the_winners_holds_and_loses_the_standby(
    client: httpx.AsyncClient, container: Container
) -> None:
    admin = await admin_token(client, container)
    draw = Draw(await draw_drop(client, admin, closes_in=1.5, claim_seconds=600, **_sized(1, 1)))
    await draw.enter(client, ASKS[:5])
    model = await draw.drawn(client, {NINE: 1, TEN: 1})
    winners = [e for e in model.entries if e.status == "won"]
    holds = {e.entry_id: (await draw.entry(client, e.entry_id))["reservationId"] for e in winners}
    cancelled = await client.patch(
        f"/api/drops/{draw.id}", json={"status": "cancelled"}, headers=auth(admin)
    )
    assert cancelled.status_code == 200, cancelled.text

    async def all_lost() -> bool:
        for expected in model.entries:
            if expected.status == "standby":
                if (await draw.entry(client, expected.entry_id))["status"] != "lost":
                    return False
        return True

    await eventually(all_lost, 3)
    for entry_id, reservation_id in holds.items():
        token = draw.tokens[entry_id]
        live = (await client.get("/api/me/reservations", headers=auth(token))).json()
        assert reservation_id not in [h["id"] for h in live]
        bought = await client.post(
            f"/api/reservations/{reservation_id}/purchase", headers=auth(token)
        )
        assert bought.status_code == 409, bought.text
        assert bought.json()["code"] == "RESERVATION_CANCELLED"
    # Nothing was handed over: the cancelled units did not go to a standby entry.
    for expected in model.entries:
        entry = await draw.entry(client, expected.entry_id)
        if expected.status == "standby":
            assert entry["reservationId"] is None
    drop = (await client.get(f"/api/drops/{draw.id}")).json()
    assert drop["status"] == "cancelled"
    assert drop["activeReservations"] == 0
    await draw.recorded(client, container)
    await assert_invariant(container, draw.id)
