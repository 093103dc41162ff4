"""JWT access and refresh tokens (HS256, pyjwt).

The algorithm is pinned and exp, iat, sub, typ, iss and aud are required, so
an `alg: none` token, a token of the other kind or one signed with the other
secret never passes. Both kinds carry `sid`, the refresh family (the login
session), which logout and reuse detection revoke.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from app.config import Settings
from app.errors import InvalidToken, Unauthorized

ALGORITHM = "HS256"
ISSUER = "sneakerdrop"
AUDIENCE = "sneakerdrop-api"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "typ", "iss", "aud"]
VERIFIED_CACHE_SIZE = 50_000  # access tokens whose signature this process already checked


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    role: str
    session_id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    user_id: str
    session_id: str
    token_id: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.access_secret = settings.access_secret
        self.refresh_secret = settings.refresh_secret
        self.access_ttl = settings.access_token_ttl_seconds
        self.refresh_ttl = settings.refresh_token_ttl_seconds
        # token -> (claims, exp). A storm sends the same token many times a second; its
        # signature and claims cannot change, only its time can run out, so each token
        # is verified once and then only its expiry is checked. Keyed by the whole token,
        # signature included, so a forged one never matches.
        self._verified: OrderedDict[str, tuple[AccessClaims, int]] = OrderedDict()

    def issue_access(self, user_id: str, role: str, session_id: str, display_name: str) -> str:
        now = int(time.time())
        payload = {
            "sub": user_id,
            "role": role,
            "name": display_name,
            "sid": session_id,
            "typ": "access",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self.access_ttl,
        }
        return jwt.encode(payload, self.access_secret, algorithm=ALGORITHM)

    def issue_refresh(self, user_id: str, session_id: str) -> tuple[str, str]:
        """A new refresh token and its id (jti)."""
        token_id = secrets.token_hex(16)
        now = int(time.time())
        payload = {
            "sub": user_id,
            "sid": session_id,
            "jti": token_id,
            "typ": "refresh",
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self.refresh_ttl,
        }
        return jwt.encode(payload, self.refresh_secret, algorithm=ALGORITHM), token_id

    @staticmethod
    def _decode(token: str, secret: str, typ: str) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        if claims.get("typ") != typ or not isinstance(claims.get("sub"), str):
            return None
        if not isinstance(claims.get("sid"), str):
            return None
        return claims

    def decode_access(self, token: str) -> AccessClaims:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        claims = self._decode(token, self.access_secret, "access")
        if claims is None or claims.get("role") not in ("customer", "admin"):
            raise Unauthorized("Missing, invalid or expired access token")
        name = claims.get("name")
        access = AccessClaims(
            claims["sub"], claims["role"], claims["sid"], name if isinstance(name, str) else ""
        )
        self._verified[token] = (access, int(claims["exp"]))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)  # the oldest verified token goes
        return access

    def decode_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, self.refresh_secret, "refresh")
        if claims is None or not isinstance(claims.get("jti"), str):
            raise InvalidToken()
        return RefreshClaims(claims["sub"], claims["sid"], claims["jti"])
