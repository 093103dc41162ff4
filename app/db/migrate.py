"""`alembic upgrade head`, run from code (`sneakerdrop serve` and `sneakerdrop migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

# app/db/migrate.py -> the repository (or the image's /app) holding migrations/.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def migrations_dir() -> Path:
    """The top-level `migrations/` folder (next to `app/`, else in the working directory)."""
    for candidate in (_PROJECT_ROOT / "migrations", Path.cwd() / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"no Alembic migrations/ folder next to {_PROJECT_ROOT / 'app'} or in {Path.cwd()}"
    )


def run_migrations(database_url: str) -> None:
    """Upgrade the database at `database_url` to the newest revision.

    Synchronous: migrations/env.py runs its own event loop, so call this outside one.
    """
    config = Config()  # no alembic.ini: it would only add a logging setup of its own
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % (e.g. in a password) must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")
