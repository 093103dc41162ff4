"""POST /api/auth/signup and /api/auth/login against the real stores: every contract row,
every bad input, the rate limits, X-Request-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.support.factories import PASSWORD, auth, signup

SIGNUP, LOGIN = "/api/auth/signup", "/api/auth/login"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def post_raw(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    """JSON with ASCII escapes, so lone surrogates reach the server as `\\udXXX`."""
    content = json.dumps(body).encode()
    return await client.post(path, content=content, headers={"content-type": "application/json"})


def assert_session(body: dict[str, Any], email: str) -> None:
    assert set(body) == {"user", "accessToken", "refreshToken", "tokenType", "expiresIn"}
    assert set(body["user"]) == {"id", "email", "displayName", "role"}
    assert body["user"]["email"] == email
    assert body["user"]["role"] == "customer"
    assert isinstance(body["user"]["id"], str)
    assert body["user"]["id"]
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == 900
    assert isinstance(body["accessToken"], str)
    assert isinstance(body["refreshToken"], str)
    assert body["accessToken"] != body["refreshToken"]


# --- signup -------------------------------------------------------------------


async def test_signup_returns_a_session_whose_access_token_works(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SIGNUP, json={"email": "Mixed.Case@Example.COM", "password": PASSWORD, "displayName": "Zoë"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_session(body, "mixed.case@example.com")
    assert body["user"]["displayName"] == "Zoë"
    me = await client.get("/api/auth/me", headers=auth(body["accessToken"]))
    assert me.status_code == 200, me.text
    assert me.json() == body["user"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a@x.com", "A@X.com"),
        ("A@X.com", "a@x.com"),
        ("a@x.com", "a@x.com"),
        ("a@x.com", "a@X.COM"),
    ],
)
async def test_email_is_unique_whatever_its_case(
    client: httpx.AsyncClient, first: str, second: str
) -> None:
    await signup(client, first)
    again = await client.post(SIGNUP, json={"email": second, "password": "another-password"})
    assert_problem(again, 409, "EMAIL_TAKEN")
    # The first account is untouched: its password still works, the second one does not.
    ok = await client.post(LOGIN, json={"email": "a@x.com", "password": PASSWORD})
    assert ok.status_code == 200, ok.text
    bad = await client.post(LOGIN, json={"email": "a@x.com", "password": "another-password"})
    assert_problem(bad, 401, "INVALID_CREDENTIALS")


async def test_concurrent_signups_of_one_email_give_one_account(client: httpx.AsyncClient) -> None:
    bodies = [{"email": e, "password": PASSWORD} for e in ("race@x.com", "RACE@x.com") * 3]
    responses = await asyncio.gather(*(client.post(SIGNUP, json=b) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409], [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "EMAIL_TAKEN")


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("a" * 7, 422),
        ("a" * 8, 201),
        ("a" * 72, 201),
        ("a" * 73, 422),
        ("€€a", 422),  # 3 characters, 7 bytes
        ("😀😀", 201),  # 2 characters, 8 bytes
        ("€" * 24, 201),  # 72 bytes
        ("é" * 36 + "a", 422),  # 73 bytes
        ("€" * 25, 422),  # 75 bytes
        ("a" * 1025, 422),
        ("", 422),
        ("abc\x00defgh", 422),
    ],
)
async def test_password_is_8_to_72_utf8_bytes(
    client: httpx.AsyncClient, password: str, status: int
) -> None:
    response = await client.post(SIGNUP, json={"email": "p@x.com", "password": password})
    if status == 201:
        assert response.status_code == 201, response.text
        login = await client.post(LOGIN, json={"email": "p@x.com", "password": password})
        assert login.status_code == 200, login.text
    else:
        assert_problem(response, 422, "VALIDATION_ERROR")


async def test_a_refused_password_is_not_echoed(client: httpx.AsyncClient) -> None:
    password = "Sup3r-Secret-Passphrase-" * 4  # 96 bytes
    response = await client.post(SIGNUP, json={"email": "echo@x.com", "password": password})
    assert_problem(response, 422, "VALIDATION_ERROR")
    assert "Sup3r-Secret" not in response.text


async def test_a_72_byte_password_is_not_truncated(client: httpx.AsyncClient) -> None:
    password = "€" * 24
    created = await client.post(SIGNUP, json={"email": "t@x.com", "password": password})
    assert created.status_code == 201, created.text
    # bcrypt reads only 72 bytes: a longer password must not log in on its prefix.
    for attempt in (password + "x", password + "€" * 10):
        response = await client.post(LOGIN, json={"email": "t@x.com", "password": attempt})
        assert_problem(response, 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "", "a@", "@x.com", "a b@x.com", "a@@x.com", "a" * 250 + "@x.com", "a@x"],
)
async def test_invalid_email_is_422(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post(SIGNUP, json={"email": email, "password": PASSWORD})
    assert_problem(response, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "extra",
    [{"role": "admin"}, {"isAdmin": True}, {"id": "u1"}, {"passwordHash": "x"}, {"Role": "admin"}],
)
async def test_unknown_fields_are_refused_and_never_make_an_admin(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    response = await client.post(SIGNUP, json={"email": "m@x.com", "password": PASSWORD, **extra})
    assert_problem(response, 422, "VALIDATION_ERROR")
    login = await client.post(LOGIN, json={"email": "m@x.com", "password": PASSWORD})
    assert_problem(login, 401, "INVALID_CREDENTIALS")  # nothing was created


@pytest.mark.parametrize(
    "body",
    [
        {"email": 12345, "password": PASSWORD},
        {"email": "w@x.com", "password": None},
        {"email": "w@x.com", "password": 12345678},
        {"email": ["w@x.com"], "password": PASSWORD},
        {"email": "w@x.com", "password": PASSWORD, "displayName": 5},
        {"email": "w@x.com"},
        {"password": PASSWORD},
        {},
        [],
        "w@x.com",
        None,
    ],
)
async def test_wrong_types_and_missing_fields_are_422(client: httpx.AsyncClient, body: Any) -> None:
    assert_problem(await client.post(SIGNUP, json=body), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("display_name", "expected"),
    [("  Ada  ", "Ada"), ("a" * 64, "a" * 64), ("Zoë 😀", "Zoë 😀"), (None, None)],
)
async def test_display_name_is_optional_and_trimmed(
    client: httpx.AsyncClient, display_name: str | None, expected: str | None
) -> None:
    body: dict[str, Any] = {"email": "d@x.com", "password": PASSWORD}
    if display_name is not None:
        body["displayName"] = display_name
    response = await client.post(SIGNUP, json=body)
    assert response.status_code == 201, response.text
    name = response.json()["user"]["displayName"]
    if expected is None:
        assert isinstance(name, str)
        assert 1 <= len(name) <= 64
    else:
        assert name == expected


@pytest.mark.parametrize(
    "display_name",
    ["", "   ", "a" * 65, "line\nbreak", "nul\x00", "\x1b[31mred", "del\x7f", "a\tb"],
)
async def test_display_name_bounded_without_control_chars(
    client: httpx.AsyncClient, display_name: str
) -> None:
    body = {"email": "d@x.com", "password": PASSWORD, "displayName": display_name}
    assert_problem(await client.post(SIGNUP, json=body), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"not json", "application/json"),
        (b'{"email": "j@x.com", "password": ', "application/json"),
        (b'{"email": "j@x.com", "password": "correct-horse-battery"}', "text/plain"),
        (b"email=j%40x.com&password=correct-horse-battery", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b'{"email": "j@x.com", "password": "\\ud800abcdefgh"}', "application/json"),
    ],
)
async def test_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await client.post(SIGNUP, content=content, headers={"content-type": content_type})
    assert_problem(response, 422, "VALIDATION_ERROR")


async def test_body_over_16_kib_is_413(client: httpx.AsyncClient) -> None:
    body = {"email": "big@x.com", "password": PASSWORD, "displayName": "a" * 17_000}
    assert_problem(await client.post(SIGNUP, json=body), 413, "PAYLOAD_TOO_LARGE")


# --- login --------------------------------------------------------------------


async def test_login_returns_a_fresh_session(client: httpx.AsyncClient) -> None:
    created = await signup(client, "l@x.com")
    response = await client.post(LOGIN, json={"email": "  L@X.COM ", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_session(body, "l@x.com")
    assert body["user"] == created["user"]
    assert body["refreshToken"] != created["refreshToken"]
    me = await client.get("/api/auth/me", headers=auth(body["accessToken"]))
    assert me.status_code == 200
    assert me.json() == created["user"]


async def test_unknown_email_and_wrong_password_answer_identically(
    client: httpx.AsyncClient,
) -> None:
    await signup(client, "known@x.com")
    wrong = await client.post(LOGIN, json={"email": "known@x.com", "password": "wrong-password"})
    unknown = await client.post(LOGIN, json={"email": "nobody@x.com", "password": PASSWORD})
    assert_problem(wrong, 401, "INVALID_CREDENTIALS")
    assert_problem(unknown, 401, "INVALID_CREDENTIALS")
    assert wrong.content == unknown.content
    assert wrong.headers["content-type"] == unknown.headers["content-type"]


@pytest.mark.parametrize(
    "password",
    ["a" * 73, "€" * 25, "a" * 1024, "a" * 1025, "a" * 5000, "\ud800abcdefgh", "abc\x00defgh"],
)
async def test_odd_login_passwords_are_refused_never_500(
    client: httpx.AsyncClient, password: str
) -> None:
    await signup(client, "o@x.com")
    response = await post_raw(client, LOGIN, {"email": "o@x.com", "password": password})
    assert response.status_code in (401, 422), response.text
    code = "INVALID_CREDENTIALS" if response.status_code == 401 else "VALIDATION_ERROR"
    assert_problem(response, response.status_code, code)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a\x00@x.com", "password": PASSWORD},
        {"email": "\ud800@x.com", "password": PASSWORD},
        {"email": "x" * 400, "password": PASSWORD},
        {"email": "", "password": PASSWORD},
        {"email": "o@x.com", "password": ""},
        {"email": "o@x.com", "password": None},
        {"email": "o@x.com", "password": PASSWORD, "role": "admin"},
        {"email": "o@x.com"},
    ],
)
async def test_odd_login_bodies_are_refused_never_500(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await post_raw(client, LOGIN, body)
    assert response.status_code in (401, 422), response.text
    code = "INVALID_CREDENTIALS" if response.status_code == 401 else "VALIDATION_ERROR"
    assert_problem(response, response.status_code, code)


# --- X-Request-ID -------------------------------------------------------------


async def test_every_auth_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    good = {"email": "rid@x.com", "password": PASSWORD}
    responses = [
        await client.post(SIGNUP, json=good),
        await client.post(SIGNUP, json=good),  # 409
        await client.post(SIGNUP, json={"email": "bad"}),  # 422
        await client.post(LOGIN, json={**good, "password": "wrong-password"}),  # 401
        await client.post(LOGIN, json=good),  # 200
        await client.post(SIGNUP, content=b"x" * 20_000),  # 413
        await client.get("/api/auth/nope"),  # 404
    ]
    assert [r.status_code for r in responses] == [201, 409, 422, 401, 200, 413, 404]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)  # generated per request


@pytest.mark.parametrize("method_path", [("POST", SIGNUP), ("POST", LOGIN)])
async def test_request_id_is_echoed(
    client: httpx.AsyncClient, method_path: tuple[str, str]
) -> None:
    method, path = method_path
    for body in ({"email": "e@x.com", "password": PASSWORD}, {"email": 1}):
        response = await client.request(
            method, path, json=body, headers={"X-Request-ID": "req-42.abc:1"}
        )
        assert response.headers["x-request-id"] == "req-42.abc:1"
