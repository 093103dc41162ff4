"""Settings: the only place that reads the environment (or a `.env` file).

Every variable of the wire contract's configuration table is a typed field here,
with its unit in its name. `load_settings()` also fills in development JWT secrets
(generated once, kept in `DATA_DIR`) and refuses weak ones in production.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32
_RATE_RE = re.compile(r"^(\d+)\s*/\s*(second|minute|hour|day)$")
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class RateLimit:
    """A parsed `N/period` limit, or `off`."""

    def __init__(self, text: str) -> None:
        text = text.strip().lower()
        self.text = text
        if text == "off":
            self.limit, self.period_seconds = 0, 0
            return
        match = _RATE_RE.match(text)
        if not match:
            raise ValueError(f"rate limit must look like '10/minute' or 'off', got {text!r}")
        self.limit = int(match.group(1))
        self.period_seconds = _PERIOD_SECONDS[match.group(2)]
        if self.limit < 1:
            raise ValueError("rate limit count must be at least 1")

    @property
    def enabled(self) -> bool:
        return self.limit > 0


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=1, le=65535)

    database_url: str | None = None
    redis_url: str | None = None
    redis_cluster: bool = False
    # How long a Redis command may go unanswered before its request gets a 503.
    redis_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    data_dir: Path = Path("./.sneakerdrop")

    jwt_access_secret: str | None = None
    jwt_refresh_secret: str | None = None
    access_token_ttl_seconds: int = Field(default=900, ge=10, le=86400)
    refresh_token_ttl_seconds: int = Field(default=1_209_600, ge=60, le=31_536_000)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    reservation_ttl_seconds: int = Field(default=60, ge=1, le=86400)
    purchase_claim_timeout_seconds: int = Field(default=30, ge=2, le=600)
    reconcile_interval_seconds: int = Field(default=60, ge=1, le=86400)
    # How long `serve` waits for open requests (a long-poll is held up to 25 s) after a
    # stop signal before it cancels them.
    shutdown_grace_seconds: int = Field(default=10, ge=0, le=600)
    sweep_interval_ms: int = Field(default=500, ge=50, le=60_000)
    stock_broadcast_interval_ms: int = Field(default=100, ge=10, le=60_000)
    drops_cache_ms: int = Field(default=50, ge=0, le=5_000)  # GET /api/drops, per process

    admin_email: str | None = None
    admin_password: str | None = None

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    rate_limits: Literal["on", "off"] = "on"
    rate_limit_login: str = "10/minute"  # failed logins of one account from one client IP
    rate_limit_login_account: str = "100/minute"  # failed logins of one account, all IPs
    rate_limit_login_ip: str = "100/minute"  # login attempts from one client IP
    rate_limit_signup_ip: str = "20/minute"
    rate_limit_reserve: str = "10/second"
    rate_limit_reserve_ip: str = "off"

    # After a user's hold is cancelled by that user or expires, that user's next reserve in
    # the same drop waits this long (409 COOLDOWN): the unit goes to someone else first.
    reserve_cooldown_seconds: int = Field(default=10, ge=0, le=3600)
    # When set, /metrics needs `Authorization: Bearer <METRICS_TOKEN>`.
    metrics_token: str | None = None

    # Redis connections one worker process may hold, all its clients together (the
    # Socket.IO manager's pool and listener included): clients can never raise it.
    redis_max_connections: int = Field(default=50, ge=8, le=10_000)
    # The address this host's other workers and other hosts reach this worker at, for the
    # Socket.IO requests they hand over to the worker holding the session
    # (app/realtime/session_routing.py). Unset: HOST. `off`: no hand-over (one worker).
    socket_forward_host: str | None = None
    # Socket.IO connections one client address may hold open on one worker process.
    socket_connections_per_ip: int = Field(default=200, ge=1, le=1_000_000)
    # Password hashes (bcrypt) one worker runs at once, each in a SCHED_IDLE process of its
    # own (app/services/passwords.py); more wait their turn.
    password_hash_processes: int = Field(default=1, ge=1, le=64)

    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_statement_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    log_level: str = "INFO"
    # After each request a worker polls its sockets this long instead of sleeping
    # (app/runtime/busy_poll.py); 0 lets it sleep at once.
    busy_poll_ms: float = Field(default=2.0, ge=0, le=100)
    # Connections a worker accepts each time its listening socket is ready
    # (app/runtime/event_loop.py); 1 accepts one per turn of the event loop, as libuv does.
    accept_batch: int = Field(default=256, ge=1, le=4096)
    # The loop `serve` runs: uvloop accepting in batches (app/runtime/event_loop.py), or
    # uvicorn's own uvloop loop (`uvloop`, which also ignores ACCEPT_BATCH).
    event_loop: Literal["batch-accept", "uvloop"] = "batch-accept"
    # Bounded request heads (app/runtime/http_limits.py): 16 KiB, complete within 10 s.
    http_limits: Literal["on", "off"] = "on"
    # Freeze start-up objects out of garbage collection (app/runtime/gc_tuning.py).
    gc_freeze: bool = True
    # Socket.IO delivery to this worker's clients: a plain loop (app/runtime/socketio_fanout.py)
    # or python-socketio's own task per client (`library`).
    socket_fanout: Literal["sequential", "library"] = "sequential"

    _split = field_validator("cors_origins", "trusted_proxies", mode="before")(_split_csv)

    @field_validator(
        "rate_limit_login",
        "rate_limit_login_account",
        "rate_limit_login_ip",
        "rate_limit_signup_ip",
        "rate_limit_reserve",
        "rate_limit_reserve_ip",
    )
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        RateLimit(value)
        return value.strip().lower()

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix) :]
        raise ValueError(
            "DATABASE_URL must start with postgres://, postgresql:// or postgresql+asyncpg://"
        )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _secret_rules(self) -> Settings:
        production = self.env == "production"
        for name in ("jwt_access_secret", "jwt_refresh_secret"):
            value = getattr(self, name)
            if value is None and not production:
                continue  # development: generated into DATA_DIR by load_settings()
            if not value or len(value.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"{name.upper()} must be at least {MIN_SECRET_BYTES} bytes"
                    + (" (required when ENV=production)" if production else "")
                )
        if not production:
            return self
        if self.jwt_access_secret == self.jwt_refresh_secret:
            raise ValueError("JWT_ACCESS_SECRET and JWT_REFRESH_SECRET must differ")
        if not self.metrics_token:
            raise ValueError("METRICS_TOKEN is required when ENV=production")
        if self.bcrypt_rounds < 12:
            raise ValueError("BCRYPT_ROUNDS must be at least 12 when ENV=production")
        return self

    def limit(self, name: str) -> RateLimit:
        """The named rate limit, `off` when RATE_LIMITS=off."""
        if self.rate_limits == "off":
            return RateLimit("off")
        return RateLimit(getattr(self, f"rate_limit_{name}"))

    @property
    def access_secret(self) -> str:
        assert self.jwt_access_secret, "load_settings() fills the secrets"
        return self.jwt_access_secret

    @property
    def refresh_secret(self) -> str:
        assert self.jwt_refresh_secret, "load_settings() fills the secrets"
        return self.jwt_refresh_secret


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets generated once per DATA_DIR, so dev tokens survive a restart."""
    path = data_dir / "jwt-secrets.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and all(
            isinstance(stored.get(k), str) and len(stored[k]) >= MIN_SECRET_BYTES
            for k in ("access", "refresh")
        ):
            return {"access": stored["access"], "refresh": stored["refresh"]}
    except (FileNotFoundError, ValueError):
        pass
    fresh = {"access": secrets.token_urlsafe(48), "refresh": secrets.token_urlsafe(48)}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    os.replace(tmp, path)
    return fresh


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, filling development secrets where missing."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.jwt_access_secret and settings.jwt_refresh_secret:
        return settings
    generated = _dev_secrets(settings.data_dir)
    return settings.model_copy(
        update={
            "jwt_access_secret": settings.jwt_access_secret or generated["access"],
            "jwt_refresh_secret": settings.jwt_refresh_secret or generated["refresh"],
        }
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
