"""Socket.IO events on the wire: their names and payloads, shared by whoever sends them.

The broadcaster (app/background) and the socket handlers (app/realtime) both push
`stock_update`; naming it here keeps either package from importing the other for it.
"""

from __future__ import annotations

from typing import Any

STOCK_EVENT = "stock_update"


def stock_update(drop_id: str, available: int) -> dict[str, Any]:
    """`{dropId, availableStock}`: what a subscriber of a drop is told."""
    return {"dropId": drop_id, "availableStock": available}
