"""Overrides of library internals, all in one package (docs/RUNTIME.md has one section each).

Every override here names the internal it relies on, checks at start-up that the
internal is still there (failing loudly with the library's version when it is not),
has an off switch, and comes with a version bound on its library in pyproject.toml.

- http_limits: bounded request heads in uvicorn's httptools protocol (HTTP_LIMITS)
- engineio_sids: Engine.IO session ids that name their worker (SOCKET_FORWARD_HOST)
- uvicorn_listener: a second uvicorn server in a worker, its signals left alone
  (SOCKET_FORWARD_HOST)
"""
