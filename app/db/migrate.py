"""`alembic upgrade head`, run from code (`sneakerdrop serve` and `sneakerdrop migrate`)."""

from __future__ import annotations

from contextlib import ExitStack
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config

# The repository's migrations/, installed as the package `app.migrations` (setup.py).
MIGRATIONS_PACKAGE = "app.migrations"


def run_migrations(database_url: str) -> None:
    """Upgrade the database at `database_url` to the newest revision.

    Synchronous: migrations/env.py runs its own event loop, so call this outside one.
    """
    with ExitStack() as stack:
        # A real folder for Alembic, which lists versions/ with os.listdir.
        folder: Path = stack.enter_context(resources.as_file(resources.files(MIGRATIONS_PACKAGE)))
        config = Config()  # no alembic.ini: it would only add a logging setup of its own
        config.set_main_option("script_location", str(folder))
        # ConfigParser interpolation: a literal % (e.g. in a password) must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
        config.attributes["database_url"] = database_url
        command.upgrade(config, "head")
