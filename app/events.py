"""Socket.IO events on the wire: their names and payloads, shared by whoever sends them.

The broadcaster (app/background) and the socket handlers (app/realtime) both push
`stock_update`; naming it here keeps either package from importing the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STOCK_EVENT = "stock_update"
# `{dropId, kind: "queue"|"draw", ticket|entry}` to the signed-in user's own sockets.
ACCESS_EVENT = "access_update"


def user_room(user_id: str) -> str:
    """The room of one user's sockets: those that connected with `auth: {token}`."""
    return f"user:{user_id}"


@dataclass(frozen=True, slots=True)
class StockLevel:
    """A drop's available stock (and its sizes', on a sized drop) at one moment."""

    drop_id: str
    available: int
    sizes: dict[str, int] | None = None

    def event(self) -> dict[str, Any]:
        return stock_update(self.drop_id, self.available, self.sizes)


def stock_update(
    drop_id: str, available: int, sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """`{dropId, availableStock}`, plus `sizes` {label: availableStock} for a sized drop:
    what a subscriber of a drop is told."""
    event: dict[str, Any] = {"dropId": drop_id, "availableStock": available}
    if sizes is not None:
        event["sizes"] = sizes
    return event
