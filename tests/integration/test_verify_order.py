"""`sneakerdrop verify-order` as a user runs it: a real process, its output and exit code.

The record comes from a saved file or from a local HTTP server (stdlib http.server in
a thread) that answers the two fairness routes with what each test sets: a genuine
record, a tampered one, a problem+json error, or something that is not JSON. The
command needs no stores, and the tests start none.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import fairness_records
from tests.support.fairness_records import TAMPERINGS, Record

ROOT = Path(__file__).resolve().parents[2]
DROP = "drop-1"
FAIRNESS = f"/api/drops/{DROP}/fairness"
ENTRIES = f"{FAIRNESS}/entries"


@dataclass
class RecordServer:
    """Answers GET paths from `routes`: path -> (status, content type, body)."""

    url: str
    routes: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(self, record: Record) -> None:
        self.routes[FAIRNESS] = (200, "application/json", json.dumps(record["fairness"]).encode())
        self.routes[ENTRIES] = (200, "application/json", json.dumps(record["entries"]).encode())

    def problem(self, path: str, status: int, code: str) -> None:
        body = {"type": "about:blank", "title": code, "status": status, "code": code}
        self.routes[path] = (status, "application/problem+json", json.dumps(body).encode())


@pytest.fixture
def server() -> Iterator[RecordServer]:
    state = RecordServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            status, content_type, body = state.routes.get(
                self.path, (404, "application/problem+json", b'{"code": "NOT_FOUND"}')
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval: shutdown() waits for the loop to notice it.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _command() -> list[str]:
    script = Path(sys.executable).with_name("sneakerdrop")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "app.cli"]


def verify(*args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the command with no store URLs and no DATA_DIR it could start stores in."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["DATA_DIR"] = "/nonexistent/verify-order-needs-no-data-dir"
    command = [sys.executable, "-m", "app.cli"] if module else _command()
    return subprocess.run(
        [*command, "verify-order", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def _save(record: Record, folder: Path) -> Path:
    path = folder / "record.json"
    path.write_text(json.dumps(record))
    return path


def test_a_genuine_record_from_a_file_verifies(tmp_path: Path) -> None:
    path = _save(fairness_records.genuine(size=50), tmp_path)
    result = verify(DROP, "--file", str(path), module=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"drop {DROP}: 50 entries, hmac-sha256-v1: order verified\n"
    assert result.stderr == ""


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_tampered_file_fails_with_exit_1(tmp_path: Path, name: str) -> None:
    tamper, phrase = TAMPERINGS[name]
    path = _save(tamper(fairness_records.genuine()), tmp_path)
    result = verify(DROP, "--file", str(path))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert phrase in result.stdout
    assert result.stdout.splitlines()[-1] == f"drop {DROP}: order NOT verified"


def test_a_genuine_record_from_a_server_verifies_and_is_saved(
    server: RecordServer, tmp_path: Path
) -> None:
    record = fairness_records.genuine(size=30)
    server.publish(record)
    saved = tmp_path / "copy.json"
    result = verify(DROP, "--url", server.url, "--save", str(saved))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"drop {DROP}: 30 entries, hmac-sha256-v1: order verified\n"
    assert server.requests == [FAIRNESS, ENTRIES]
    assert json.loads(saved.read_text()) == record
    # The saved copy checks again without the server.
    server.routes.clear()
    again = verify(DROP, "--file", str(saved))
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_tampered_record_from_a_server_fails_with_exit_1(
    server: RecordServer, tmp_path: Path, name: str
) -> None:
    tamper, phrase = TAMPERINGS[name]
    tampered = tamper(fairness_records.genuine())
    server.publish(tampered)
    saved = tmp_path / "evidence.json"
    result = verify(DROP, "--url", server.url + "/", "--save", str(saved))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert phrase in result.stdout
    assert json.loads(saved.read_text()) == tampered  # kept even though it failed


def test_an_unknown_drop_is_a_clear_404_with_exit_2(server: RecordServer) -> None:
    server.problem(FAIRNESS, 404, "DROP_NOT_FOUND")
    result = verify(DROP, "--url", server.url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "404 DROP_NOT_FOUND" in result.stderr
    assert "only queue and draw drops have one" in result.stderr


def test_an_order_not_fixed_is_a_clear_409_with_exit_2(server: RecordServer) -> None:
    record = fairness_records.genuine()
    server.publish(record)
    server.problem(ENTRIES, 409, "ORDER_NOT_FIXED")
    result = verify(DROP, "--url", server.url)
    assert result.returncode == 2
    assert "409 ORDER_NOT_FIXED" in result.stderr
    assert "not fixed yet" in result.stderr


def test_an_unrevealed_seed_says_not_fixed_and_shows_the_commitment(
    server: RecordServer,
) -> None:
    record = fairness_records.genuine()
    record["fairness"]["seed"] = None
    server.publish(record)
    result = verify(DROP, "--url", server.url)
    assert result.returncode == 2
    assert "not fixed yet" in result.stderr
    assert record["fairness"]["seedCommitment"] in result.stderr
    assert server.requests == [FAIRNESS]


def test_a_server_error_is_reported_with_its_code(server: RecordServer) -> None:
    server.publish(fairness_records.genuine())
    server.problem(ENTRIES, 503, "SERVICE_UNAVAILABLE")
    result = verify(DROP, "--url", server.url)
    assert result.returncode == 2
    assert "answered 503 SERVICE_UNAVAILABLE" in result.stderr


def test_malformed_json_from_the_server_exits_2(server: RecordServer) -> None:
    server.publish(fairness_records.genuine())
    server.routes[ENTRIES] = (200, "application/json", b'[{"entryId": ')
    result = verify(DROP, "--url", server.url)
    assert result.returncode == 2
    assert f"{ENTRIES} did not answer JSON" in result.stderr


def test_a_server_not_answering_exits_2() -> None:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = verify(DROP, "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 2
    assert "no answer from" in result.stderr
    assert "refused" in result.stderr.lower()


def test_a_record_of_another_drop_fails(tmp_path: Path) -> None:
    path = _save(fairness_records.genuine(drop_id="drop-2"), tmp_path)
    result = verify(DROP, "--file", str(path))
    assert result.returncode == 1
    assert "the record is of drop 'drop-2', not 'drop-1'" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],  # no DROP_ID
        [DROP, "--url", "http://127.0.0.1:1", "--file", "x.json"],
        [DROP, "--file", "x.json", "--save", "y.json"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = verify(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_the_drop_id_is_quoted_in_the_path(server: RecordServer) -> None:
    result = verify("a/b c", "--url", server.url)
    assert result.returncode == 2
    assert server.requests == ["/api/drops/a%2Fb%20c/fairness"]


def test_the_check_by_hand_in_the_docs_runs_as_written(server: RecordServer) -> None:
    """docs/FAIRNESS.md's snippet verifies a genuine record and stops on a tampered one."""
    text = (ROOT / "docs" / "FAIRNESS.md").read_text()
    match = re.search(r"## Checking a drop by hand.*?```python\n(.*?)```", text, re.S)
    assert match is not None
    snippet = re.sub(r'(?m)^SERVER = ".*"$', f'SERVER = "{server.url}"', match.group(1))
    snippet = re.sub(r'(?m)^DROP_ID = ".*"$', f'DROP_ID = "{DROP}"', snippet)
    assert server.url in snippet
    assert f'"{DROP}"' in snippet

    def run_snippet() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )

    server.publish(fairness_records.genuine(size=25))
    result = run_snippet()
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"drop {DROP}: 25 entries, order verified\n"
    for name, (tamper, _) in TAMPERINGS.items():
        server.publish(tamper(fairness_records.genuine()))
        assert run_snippet().returncode != 0, f"the snippet accepted {name}"
