"""No pooled PostgreSQL connection free within the pool's timeout: 503, not 500."""

from __future__ import annotations

from tests.conftest import AppFactory
from tests.support.factories import auth, signup


async def test_an_exhausted_pool_answers_503(make_app: AppFactory) -> None:
    client, container = await make_app(db_pool_size=1)
    token = (await signup(client))["accessToken"]
    engine = container.db.engine
    # The pool's one connection and its one overflow connection are taken.
    async with engine.connect() as first, engine.connect() as second:
        assert first is not second
        response = await client.get("/api/me/purchases", headers=auth(token))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"
    again = await client.get("/api/me/purchases", headers=auth(token))
    assert again.status_code == 200
