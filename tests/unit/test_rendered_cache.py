"""RenderedCache: one render per window and version, one render at a time, errors not kept."""

from __future__ import annotations

import asyncio

import pytest

from app.api.hot_paths import RenderedCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Renderer:
    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def __call__(self) -> bytes:
        self.calls += 1
        number = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("store down")
        return f"render {number}".encode()


async def test_a_body_is_reused_within_its_window_only() -> None:
    clock, render = Clock(), Renderer()
    cache = RenderedCache(0.05, clock)
    assert await cache.get(render, "1") == b"render 1"
    clock.now = 0.049
    assert await cache.get(render, "1") == b"render 1"
    clock.now = 0.051
    assert await cache.get(render, "1") == b"render 2"


async def test_concurrent_requests_share_one_render() -> None:
    render = Renderer()
    render.gate = asyncio.Event()
    cache = RenderedCache(0.05, Clock())
    waiting = [asyncio.ensure_future(cache.get(render, "1")) for _ in range(10)]
    await asyncio.sleep(0)  # every request is now waiting on the render under way
    render.gate.set()
    assert await asyncio.gather(*waiting) == [b"render 1"] * 10
    assert render.calls == 1


async def test_a_failed_render_reaches_its_waiters_and_is_not_kept() -> None:
    render = Renderer()
    render.fail = True
    cache = RenderedCache(0.05, Clock())
    with pytest.raises(ConnectionError):
        await cache.get(render, "1")
    render.fail = False
    assert await cache.get(render, "1") == b"render 2"


async def test_a_zero_window_renders_every_time() -> None:
    render = Renderer()
    cache = RenderedCache(0, Clock())
    assert [await cache.get(render, "1") for _ in range(3)] == [
        b"render 1",
        b"render 2",
        b"render 3",
    ]


async def test_a_new_version_renders_at_once_even_within_the_window() -> None:
    clock, render = Clock(), Renderer()
    cache = RenderedCache(10.0, clock)
    assert await cache.get(render, "1") == b"render 1"
    assert await cache.get(render, "1") == b"render 1"
    assert await cache.get(render, "2") == b"render 2"
    assert await cache.get(render, None) == b"render 3"  # the version key was lost


async def test_a_request_of_a_newer_version_does_not_wait_for_an_older_render() -> None:
    render = Renderer()
    render.gate = asyncio.Event()
    cache = RenderedCache(10.0, Clock())
    older = asyncio.ensure_future(cache.get(render, "1"))
    await asyncio.sleep(0)  # the render of version 1 is under way, its reads maybe done
    newer = asyncio.ensure_future(cache.get(render, "2"))
    await asyncio.sleep(0)
    render.gate.set()
    assert sorted([await older, await newer]) == [b"render 1", b"render 2"]
    assert render.calls == 2
