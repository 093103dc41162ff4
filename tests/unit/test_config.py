"""Settings: production secret rules, URL normalisation, rate limits, lists, dev secrets."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import MIN_SECRET_BYTES, RateLimit, Settings, load_settings

GOOD_ACCESS = "p" * 32
GOOD_REFRESH = "q" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of the runner's environment (or a .env in the cwd) leaks in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def production(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "env": "production",
        "jwt_access_secret": GOOD_ACCESS,
        "jwt_refresh_secret": GOOD_REFRESH,
        "metrics_token": "m" * 32,
    }
    base.update(values)
    return settings(**base)


# --- production secrets -------------------------------------------------------


def test_production_accepts_good_secrets() -> None:
    got = production()
    assert (got.access_secret, got.refresh_secret) == (GOOD_ACCESS, GOOD_REFRESH)
    assert MIN_SECRET_BYTES == 32


@pytest.mark.parametrize(
    "values",
    [
        {"jwt_access_secret": None},
        {"jwt_refresh_secret": None},
        {"jwt_access_secret": None, "jwt_refresh_secret": None},
        {"jwt_access_secret": ""},
        {"jwt_access_secret": "p" * 31},
        {"jwt_refresh_secret": "q" * 31},
        {"jwt_refresh_secret": GOOD_ACCESS},  # equal
        {"bcrypt_rounds": 4},
        {"metrics_token": None},
        {"metrics_token": ""},
    ],
    ids=repr,
)
def test_production_refuses_weak_settings(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        production(**values)


def test_secret_length_is_counted_in_bytes() -> None:
    multibyte = "€" + "a" * 30  # 31 characters, 33 bytes
    assert production(jwt_access_secret=multibyte).access_secret == multibyte


def test_production_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("METRICS_TOKEN", "m" * 32)
    monkeypatch.setenv("JWT_ACCESS_SECRET", GOOD_ACCESS)
    with pytest.raises(ValidationError):
        load_settings(_env_file=None, data_dir=tmp_path / "data")
    # No development secret was generated as a fallback.
    assert not (tmp_path / "data" / "jwt-secrets.json").exists()
    monkeypatch.setenv("JWT_REFRESH_SECRET", GOOD_REFRESH)
    got = load_settings(_env_file=None, data_dir=tmp_path / "data")
    assert (got.env, got.access_secret, got.refresh_secret) == (
        "production",
        GOOD_ACCESS,
        GOOD_REFRESH,
    )


def test_unknown_env_is_refused() -> None:
    with pytest.raises(ValidationError):
        settings(env="staging")


# --- store URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db:5432/app",
        "postgresql://u:p@db:5432/app",
        "postgresql+asyncpg://u:p@db:5432/app",
    ],
)
def test_database_url_is_normalised_to_asyncpg(url: str) -> None:
    assert settings(database_url=url).database_url == "postgresql+asyncpg://u:p@db:5432/app"


def test_database_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db/app")
    assert settings().database_url == "postgresql+asyncpg://u@db/app"


@pytest.mark.parametrize(
    "url",
    ["mysql://u@db/app", "postgresql+psycopg://u@db/app", "http://db/app", "db:5432/app", "pg://x"],
)
def test_database_url_with_another_scheme_is_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        settings(database_url=url)


def test_unset_urls_mean_embedded_servers() -> None:
    got = settings(database_url="", redis_url="")
    assert (got.database_url, got.redis_url) == (None, None)
    assert (settings().database_url, settings().redis_url) == (None, None)


@pytest.mark.parametrize(
    "url", ["redis://cache:6379/0", "rediss://cache:6380", "unix:///tmp/r.sock"]
)
def test_redis_url_schemes(url: str) -> None:
    assert settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    "url", ["http://cache:6379", "cache:6379", "valkey://cache", "postgres://x"]
)
def test_redis_url_with_another_scheme_is_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        settings(redis_url=url)


# --- rate limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("10/second", 10, 1),
        ("3/minute", 3, 60),
        ("100/hour", 100, 3600),
        ("1/day", 1, 86400),
        (" 5 / Minute ", 5, 60),
        ("off", 0, 0),
        ("OFF", 0, 0),
    ],
)
def test_rate_limit_parses(text: str, limit: int, period: int) -> None:
    parsed = RateLimit(text)
    assert (parsed.limit, parsed.period_seconds) == (limit, period)
    assert parsed.enabled is (limit > 0)


@pytest.mark.parametrize(
    "text", ["10", "ten/minute", "10/week", "0/minute", "-1/minute", "", "10/", "/minute", "on"]
)
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(text)
    with pytest.raises(ValidationError):
        settings(rate_limit_login=text)


def test_rate_limit_settings_and_the_master_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_LOGIN", "3/Minute")
    got = settings()
    assert got.rate_limit_login == "3/minute"
    assert (got.limit("login").limit, got.limit("login").period_seconds) == (3, 60)
    assert got.limit("reserve_ip").enabled is False  # off by default
    assert got.limit("signup_ip").limit == 20
    off = settings(rate_limits="off")
    assert not any(off.limit(n).enabled for n in ("login", "login_ip", "signup_ip", "reserve"))
    with pytest.raises(ValidationError):
        settings(rate_limits="maybe")


# --- lists --------------------------------------------------------------------


def test_cors_origins_and_trusted_proxies_are_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().cors_origins == []
    assert settings().trusted_proxies == []
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example ,,")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.1")
    got = settings()
    assert got.cors_origins == ["https://a.example", "https://b.example"]
    assert got.trusted_proxies == ["10.0.0.1"]
    assert settings(cors_origins="https://c.example").cors_origins == ["https://c.example"]


# --- development secrets ------------------------------------------------------


def test_dev_secrets_are_generated_once_and_kept(tmp_path: Path) -> None:
    first = load_settings(_env_file=None, data_dir=tmp_path)
    second = load_settings(_env_file=None, data_dir=tmp_path)
    assert first.access_secret == second.access_secret
    assert first.refresh_secret == second.refresh_secret
    assert first.access_secret != first.refresh_secret
    assert len(first.access_secret.encode()) >= MIN_SECRET_BYTES
    assert len(first.refresh_secret.encode()) >= MIN_SECRET_BYTES
    path = tmp_path / "jwt-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    other = load_settings(_env_file=None, data_dir=tmp_path / "elsewhere")
    assert other.access_secret != first.access_secret


def test_given_secrets_win_over_generated_ones(tmp_path: Path) -> None:
    generated = load_settings(_env_file=None, data_dir=tmp_path)
    partial = load_settings(_env_file=None, data_dir=tmp_path, jwt_access_secret=GOOD_ACCESS)
    assert partial.access_secret == GOOD_ACCESS
    assert partial.refresh_secret == generated.refresh_secret


@pytest.mark.parametrize(
    "content", ["not json", "[]", json.dumps({"access": "short", "refresh": "short"}), "{}"]
)
def test_a_broken_secrets_file_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / "jwt-secrets.json"
    path.write_text(content)
    got = load_settings(_env_file=None, data_dir=tmp_path)
    assert len(got.access_secret) >= MIN_SECRET_BYTES
    assert json.loads(path.read_text()) == {
        "access": got.access_secret,
        "refresh": got.refresh_secret,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
