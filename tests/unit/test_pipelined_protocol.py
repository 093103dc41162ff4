"""What the pipelined connection sends: RESP encoding, and the URL it connects to."""

from __future__ import annotations

import ssl

import pytest
from redis.exceptions import DataError

from app.store.pipelined import _Endpoint, pack_command


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    packed = pack_command(("EVALSHA", "abc", 2, "k:é", b"\x00raw", -7, 1.5))
    assert packed == (
        b"*7\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$4\r\nk:\xc3\xa9\r\n"
        b"$4\r\n\x00raw\r\n$2\r\n-7\r\n$3\r\n1.5\r\n"
    )


@pytest.mark.parametrize("value", [True, None, object(), ["list"]])
def test_values_redis_cannot_take_are_refused(value: object) -> None:
    with pytest.raises(DataError):
        pack_command(("SET", "k", value))


def test_a_plain_url_needs_no_handshake() -> None:
    endpoint = _Endpoint("redis://127.0.0.1:6390")
    assert (endpoint.host, endpoint.port, endpoint.db, endpoint.tls) == ("127.0.0.1", 6390, 0, None)
    assert endpoint.handshake() == []


def test_credentials_and_database_become_auth_and_select() -> None:
    assert _Endpoint("redis://:s%40cret@cache:6379/3").handshake() == [
        ("AUTH", "s@cret"),
        ("SELECT", 3),
    ]
    assert _Endpoint("redis://app:pw@cache/0?db=5").handshake() == [
        ("AUTH", "app", "pw"),
        ("SELECT", 5),
    ]


def test_rediss_uses_tls_and_honours_ssl_cert_reqs() -> None:
    verified = _Endpoint("rediss://cache:6380/1")
    assert verified.tls is not None
    assert verified.tls.verify_mode == ssl.CERT_REQUIRED
    unverified = _Endpoint("rediss://cache:6380/1?ssl_cert_reqs=none")
    assert unverified.tls is not None
    assert unverified.tls.verify_mode == ssl.CERT_NONE


def test_unix_socket_urls() -> None:
    endpoint = _Endpoint("unix:///run/redis.sock?db=2")
    assert (endpoint.path, endpoint.db) == ("/run/redis.sock", 2)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="scheme"):
        _Endpoint("http://cache:6379")
