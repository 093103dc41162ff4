from redis.asyncio import Redis

from app.store.channels import (
    database_of,
    database_of_url,
    socketio_channel,
    stock_dirty_channel,
)


def test_the_database_number_comes_from_the_url_path_or_query() -> None:
    assert database_of_url("redis://127.0.0.1:6379") == 0
    assert database_of_url("redis://127.0.0.1:6379/3") == 3
    assert database_of_url("redis://:secret@cache:6380?db=5") == 5
    assert database_of(Redis.from_url("redis://127.0.0.1:6379/7")) == 7
    assert database_of(Redis.from_url("redis://127.0.0.1:6379")) == 0


def test_deployments_on_two_databases_share_no_channel() -> None:
    assert stock_dirty_channel(0) != stock_dirty_channel(1)
    assert socketio_channel(0) != socketio_channel(1)
    assert {stock_dirty_channel(2), socketio_channel(2)} == {
        "sneakerdrop:2:stock-dirty",
        "sneakerdrop:2:socketio",
    }
