"""docs/API.md's route table is the one the OpenAPI schema generates."""

from __future__ import annotations

from pathlib import Path

from app.apidoc import BEGIN, END, route_table
from app.config import load_settings
from app.main import create_fastapi

DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def test_api_md_route_table_matches_openapi(tmp_path: Path) -> None:
    api = create_fastapi(load_settings(_env_file=None, env="test", data_dir=tmp_path), None)
    text = DOC.read_text()
    documented = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert documented == route_table(api.openapi()), "run `python -m app.apidoc` into docs/API.md"


def test_every_api_operation_documents_its_errors(tmp_path: Path) -> None:
    api = create_fastapi(load_settings(_env_file=None, env="test", data_dir=tmp_path), None)
    for path, operations in api.openapi()["paths"].items():
        if not path.startswith("/api"):
            continue
        for method, operation in operations.items():
            errors = [code for code in operation["responses"] if code[0] in "45"]
            assert "503" in errors, (method, path)
            assert any(code.startswith("4") for code in errors), (method, path)
