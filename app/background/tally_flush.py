"""Each process adds its reserve tally (app/reserve_tally.py) to Redis once a second."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from app import reserve_tally
from app.background.stopping import pause
from app.store.tally import TallyStore

log = logging.getLogger(__name__)


async def flush_forever(store: TallyStore, stopping: asyncio.Event) -> None:
    """Flush once a second until `stopping`, then once more (a stopping worker's last
    second still shows on the chart)."""
    while not stopping.is_set():
        try:
            await reserve_tally.flush_once(store)
        except (RedisError, OSError):
            log.warning("reserve tally flush failed", exc_info=True)
        await pause(stopping, reserve_tally.FLUSH_SECONDS)
    try:
        await reserve_tally.flush_once(store)
    except (RedisError, OSError):
        log.warning("reserve tally: last flush failed", exc_info=True)
