"""Ids from the block-buffered random source: right shape, never repeated, not shared
with a forked child."""

from __future__ import annotations

import os
import re

from app.runtime import randomness


def test_ids_are_hex_of_the_asked_length_and_distinct() -> None:
    ids = [randomness.token_hex(8) for _ in range(5000)]  # crosses several blocks
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{10000}", randomness.token_hex(5000))  # larger than a block


def test_a_forked_child_does_not_repeat_its_parents_next_id() -> None:
    randomness.token_hex(8)  # a block is buffered
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write_end, randomness.token_hex(8).encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_id != randomness.token_hex(8)
