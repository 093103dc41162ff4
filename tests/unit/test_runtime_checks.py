"""The start-up checks of app/runtime fail loudly, naming the library and its version."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import socketio

from app.realtime.socket import create_socket_server
from app.runtime import event_loop
from app.runtime.socketio_fanout import SequentialFanOut, check_fan_out

UNUSED_REDIS = "redis://127.0.0.1:1/0"  # the manager connects lazily: never reached here


def test_the_fan_out_check_passes_on_this_python_socketio() -> None:
    sio = create_socket_server(UNUSED_REDIS, [])
    assert isinstance(sio.manager, SequentialFanOut)
    assert sio.manager.sequential
    check_fan_out(sio)


def test_the_fan_out_check_names_python_socketio_when_the_internal_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(socketio.AsyncServer, "_send_eio_packet")
    with pytest.raises(RuntimeError, match=f"python-socketio {version('python-socketio')}"):
        create_socket_server(UNUSED_REDIS, [])
    # The off switch takes the library's own emit, which needs no check.
    sio = create_socket_server(UNUSED_REDIS, [], sequential_fan_out=False)
    assert not sio.manager.sequential


def test_the_event_loop_check_passes_on_this_uvloop_and_uvicorn() -> None:
    event_loop.check_event_loop()


def test_the_event_loop_check_names_uvloop_when_a_method_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "_UVLOOP_METHODS", ("create_server", "gone_method"))
    with pytest.raises(RuntimeError, match=rf"uvloop {version('uvloop')} lacks Loop\.gone_method"):
        event_loop.check_event_loop()


def test_the_event_loop_check_names_uvicorn_when_its_loop_setting_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "LOOP_FACTORY", "app.runtime.event_loop:NoSuchLoop")
    with pytest.raises(RuntimeError, match=f"uvicorn {version('uvicorn')}"):
        event_loop.check_event_loop()
