"""Overrides of library internals and the runtime's own tuning, all in one package.

docs/RUNTIME.md has one section each. Every override of a library internal names the
internal it relies on, checks at start-up that the internal is still there (failing
loudly with the library's version when it is not), has an off switch, and comes with a
version bound on its library in pyproject.toml.

- http_limits: bounded request heads in uvicorn's httptools protocol (HTTP_LIMITS)
- engineio_sids: Engine.IO session ids that name their worker (SOCKET_FORWARD_HOST)
- session_ids: the worker ids, and reading a session id's owner (used by engineio_sids
  and app/realtime/session_routing.py; no internal of its own)
- uvicorn_listener: a second uvicorn server in a worker, its signals left alone
  (SOCKET_FORWARD_HOST)
- socketio_fanout: Socket.IO delivery without a task per client, through
  python-socketio's `_send_eio_packet` (SOCKET_FANOUT)
- event_loop: uvloop whose servers accept in batches, one socket per worker
  (EVENT_LOOP, ACCEPT_BATCH)
- busy_poll: the loop kept polling briefly after each request (BUSY_POLL_MS)
- gc_tuning: start-up objects frozen out of garbage collection (GC_FREEZE)
- stalls: garbage-collector pauses and event-loop lag, measured (no switch)
- randomness: ids from a buffered block of `os.urandom` (no switch)

Not here: the store's own RESP client for the scripts, app/store/pipelined.py (the
store owns Redis), which docs/RUNTIME.md lists too.
"""
