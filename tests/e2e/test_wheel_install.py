"""A real (not editable) install runs: the wheel carries lua/ and migrations/.

The wheel is built from a copy of the source tree and installed into a fresh venv; then
`sneakerdrop serve` runs from a folder with no source in it and answers /readyz. The
venv sees the test venv's packages through a .pth line (not its `.pth` files, so not
the editable install of the repository): the dependencies are reused, the project's
code is the wheel's alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.realtime_server import stop_serve_processes, wait_ready
from tests.support.stores import StoreUrls

ROOT = Path(__file__).resolve().parents[2]
# What a source distribution would leave out: caches, environments, data, build output.
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".sneakerdrop",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    "node_modules",
    ".*_cache",
    "reports",
)
pytestmark = pytest.mark.slow


def _run(*argv: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the built wheel installed; returns its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIP, symlinks=True)
    dist = work / "dist"
    # Built as `pip wheel .` builds it: setuptools (pyproject's build-system) in isolation.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source, cwd=work)
    (wheel,) = dist.glob("sneakerdrop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("app/lua/reserve.lua", "app/migrations/env.py", "app/static/index.html"):
        assert required in names, f"{required} is not in {wheel.name}"
    assert any(n.startswith("app/migrations/versions/") and n.endswith(".py") for n in names)

    env_dir = work / "v"
    venv.create(env_dir, with_pip=False, symlinks=True)
    (purelib,) = env_dir.glob("lib/python*/site-packages")
    (purelib / "test-venv-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = env_dir / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
         "--no-index", "-q", wheel, cwd=work)  # fmt: skip
    shutil.rmtree(source)  # nothing of the source tree is left to fall back on
    return env_dir / "bin"


def test_the_wheel_holds_the_code_and_its_data(installed: Path, tmp_path: Path) -> None:
    where = _run(
        installed / "python",
        "-c",
        "import app, app.store.scripts as s, app.db.migrate as m; "
        "from importlib.resources import files; "
        "print(app.__file__); print(files(m.MIGRATIONS_PACKAGE)); "
        "print(len(s.read_source(s.ScriptName.RESERVE)))",
        cwd=tmp_path,
    ).split()
    venv_dir = str(installed.parent)
    assert where[0].startswith(venv_dir), where  # the wheel's app, not the repository's
    assert where[1].startswith(venv_dir), where
    assert int(where[2]) > 0


async def test_serve_from_any_folder(installed: Path, stores: StoreUrls, tmp_path: Path) -> None:
    from app.embedded.common import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        DATABASE_URL=stores.database_url,
        REDIS_URL=stores.redis_url,
        DATA_DIR=str(tmp_path / "data"),
        ENV="development",
    )
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(installed / "sneakerdrop"), "serve", "--port", str(port), "--workers", "1",
            stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
            cwd=tmp_path, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        # Migrations (from the wheel's app.migrations) and the Lua scripts (app.lua) both
        # load on the way to ready.
        await wait_ready(process, f"http://127.0.0.1:{port}", log)
    finally:
        codes = await stop_serve_processes([process])
    assert codes == [0], log.read_text(errors="replace")
