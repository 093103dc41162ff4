"""The reference server of loadtests/storm.py does what the product does on reserve, no less.

Its KEYS and ARGV must be the product's (else the ratio compares different scripts'
work), its token check must accept exactly the product's access tokens, and its
SOLD_OUT answer must be the product's bytes (else the two send different amounts).
"""

from __future__ import annotations

from typing import Any

from app.api.problems import problem_body
from app.config import Settings
from app.errors import SoldOut
from app.services.tokens import TokenService
from app.store.channels import stock_dirty_channel
from app.store.holds import HoldStore
from app.store.keys import HoldRef
from app.store.scripts import ScriptName
from loadtests.reference.app import access_user, problem, reserve_call

SECRET = "reference-test-access-secret-0123456789"


class RecordingScripts:
    """Stands in for app.store.scripts.Scripts: records the call, answers SOLD_OUT."""

    def __init__(self) -> None:
        self.calls: list[tuple[ScriptName, list[str], list[Any]]] = []

    async def run(self, name: ScriptName, keys: list[str], args: list[Any]) -> list[Any]:
        self.calls.append((name, keys, args))
        return ["SOLD_OUT"]


async def test_reserve_call_is_what_the_hold_store_passes() -> None:
    scripts = RecordingScripts()
    ref = HoldRef("0123456789abcdef", "fedcba9876543210", "0123456789abcdef.fe.01")
    store = HoldStore(None, scripts)  # type: ignore[arg-type]
    await store.reserve(ref, 60_000, "5e55")  # as the product's reserve route
    await store.reserve(ref, 60_000)  # as its Idempotency-Key route, checked apart
    channel = stock_dirty_channel(0)  # the stand-in client has no pool: database 0
    checked = reserve_call(ref.drop_id, ref.user_id, ref.hold_id, 60_000, channel, "5e55")
    plain = reserve_call(ref.drop_id, ref.user_id, ref.hold_id, 60_000, channel)
    assert scripts.calls == [(ScriptName.RESERVE, *checked), (ScriptName.RESERVE, *plain)]


def tokens(secret: str = SECRET) -> TokenService:
    settings = Settings(
        _env_file=None,
        jwt_access_secret=secret,
        jwt_refresh_secret=SECRET + "-refresh",
    )
    return TokenService(settings)


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_access_user_takes_the_products_access_tokens_only() -> None:
    service = tokens()
    access = service.issue_access("fedcba9876543210", "customer", "sid", "Ann")
    assert access_user(bearer(access), SECRET) == ("fedcba9876543210", "sid")
    assert service.decode_access(access).user_id == "fedcba9876543210"
    refresh, _ = service.issue_refresh("fedcba9876543210", "sid")
    other = tokens(SECRET + "-other").issue_access("fedcba9876543210", "customer", "sid", "Ann")
    assert access_user(bearer(refresh), SECRET) is None
    assert access_user(bearer(other), SECRET) is None
    assert access_user(access.encode(), SECRET) is None  # no scheme
    assert access_user(b"", SECRET) is None


def test_sold_out_answer_is_the_products() -> None:
    error = SoldOut("No units left; holds that expire return to stock", available=0)
    expected = problem_body(409, error.code, error.title, error.detail, error.extra)
    assert problem("SOLD_OUT") == (409, expected)
    assert problem("LIMIT_REACHED")[0] == 409
    assert problem("UNAUTHORIZED")[0] == 401
