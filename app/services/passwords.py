"""bcrypt hashing, off the event loop.

bcrypt is deliberately slow (about a quarter second at cost 12): run on the
event loop it would stall every other request, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio

import bcrypt

MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 72  # bcrypt's own limit; longer passwords are refused, never truncated


class PasswordHasher:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        # Hashed once so a login for an unknown email costs the same as a wrong password.
        self._dummy_hash = bcrypt.hashpw(b"sneakerdrop-dummy-password", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        digest = await asyncio.to_thread(
            bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.rounds)
        )
        return digest.decode()

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Constant work whether or not the account exists."""
        candidate = password.encode()
        usable = password_hash is not None and len(candidate) <= MAX_PASSWORD_BYTES
        # An unusable attempt (unknown account, over-long password) still pays for one check.
        target = password_hash.encode() if usable and password_hash else self._dummy_hash
        matched = await asyncio.to_thread(
            bcrypt.checkpw, candidate if usable else b"unusable", target
        )
        return matched and usable
