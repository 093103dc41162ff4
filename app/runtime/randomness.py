"""Unguessable hex ids without a system call for each one.

`secrets.token_hex` reads the kernel's random source on every call: one syscall per
request id and per reservation id, a few per cent of a reserve. The same source is
read here in 4 KiB blocks and handed out in slices, so the ids stay as unguessable
as before. A forked child starts with an empty block (no id shared with its parent).

Public APIs only (`os.urandom`, `os.register_at_fork`): no start-up check, and no switch
(the ids are as random as `secrets.token_hex`'s). docs/RUNTIME.md.
"""

from __future__ import annotations

import os

_BLOCK_BYTES = 4096

_block = b""
_offset = 0


def token_hex(nbytes: int) -> str:
    """`nbytes` random bytes as hex, like `secrets.token_hex`."""
    global _block, _offset
    if _offset + nbytes > len(_block):
        _block, _offset = os.urandom(max(_BLOCK_BYTES, nbytes)), 0
    start, _offset = _offset, _offset + nbytes
    return _block[start:_offset].hex()


def _forget_block() -> None:
    global _block, _offset
    _block, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_block)
