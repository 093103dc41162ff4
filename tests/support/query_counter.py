"""Count the SQL statements an app sends to PostgreSQL while a block runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from app.container import Container


@contextmanager
def pg_statements(container: Container) -> Iterator[list[str]]:
    """Yields the list that fills with every statement the app's engine executes."""
    seen: list[str] = []
    engine = container.db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
