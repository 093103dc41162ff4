"""What the `sneakerdrop` subcommands do, beyond serving (see app/cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.background.reconciler import Reconciler
from app.config import Settings
from app.container import Container, build_container
from app.domain import DropFields


async def _with_container(settings: Settings) -> Container:
    return await build_container(settings)


async def create_admin(settings: Settings, email: str, password: str) -> None:
    container = await _with_container(settings)
    try:
        user = await container.auth_service.ensure_admin(email, password)
        print(f"admin {user.email} ({user.id}) is ready")
    finally:
        await container.close()


async def demo(settings: Settings) -> None:
    """Create a sample drop, live now for an hour."""
    container = await _with_container(settings)
    try:
        view = await container.drop_service.create(
            DropFields(
                name="Air Demo 1 Retro High 'Chicago'",
                brand="Demo",
                image_url=None,
                price_cents=18000,
                currency="USD",
                total_stock=50,
                per_user_limit=1,
                starts_at=datetime.now(UTC),
                ends_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
        print(f"demo drop {view.definition.id}: {view.counters.available} units, {view.status}")
    finally:
        await container.close()


async def reconcile_once(settings: Settings) -> None:
    container = await _with_container(settings)
    try:
        checks = await Reconciler(
            container.db, container.drop_store, container.hold_store
        ).run_once()
        repaired = [c for c in checks if not c.healthy]
        print(f"reconciled {len(checks)} drops; {len(repaired)} needed repair")
        for check in repaired:
            print(f"  {check.drop_id} drift {check.drift:+d}")
    finally:
        await container.close()


async def check(settings: Settings) -> int:
    """Print each drop's invariant; 1 when any drop drifts."""
    container = await _with_container(settings)
    try:
        checks = await Reconciler(container.db, container.drop_store, container.hold_store).check()
    finally:
        await container.close()
    print(f"{'drop':<18} {'total':>8} {'avail':>8} {'holds':>7} {'sold':>7}  state")
    failing = 0
    for c in checks:
        state = "ok" if c.healthy else f"DRIFT {c.drift:+d}"
        if c.total is None:
            state = "not in Redis (rebuilt on next use)"
        failing += not c.healthy and c.total is not None
        print(
            f"{c.drop_id:<18} {c.total_pg:>8} {c.available:>8} {c.live_holds:>7} {c.sold_pg:>7}  {state}"
        )
        for problem in c.size_problems:
            print(f"{'':<18} size {problem}")
    return 1 if failing else 0
