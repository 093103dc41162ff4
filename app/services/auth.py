"""Sign-up, sign-in, refresh with rotation and reuse detection, logout, the caller.

A refresh family is one login session. Refresh rotates: the presented token is
marked rotated and a new one is issued in the same family. Presenting a rotated
token again means it was stolen (or replayed): the whole family is revoked, and
so are the access tokens of that session, through a Redis marker every
authenticated request checks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import tokens as token_rows
from app.db import users as user_rows
from app.db.models import User
from app.db.session import Database
from app.errors import SIGNED_OUT, EmailTaken, InvalidCredentials, InvalidToken, Unauthorized
from app.services.passwords import PasswordHasher
from app.services.tokens import AccessClaims, TokenService, token_digest
from app.store import keys
from app.store.sessions import SessionStore


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    access_token: str
    refresh_token: str
    expires_in: int


class AuthService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sessions: SessionStore,
        hasher: PasswordHasher,
    ) -> None:
        self.settings = settings
        self.db = db
        self.sessions = sessions
        self.hasher = hasher
        self.tokens = TokenService(settings)

    async def signup(self, email: str, password: str, display_name: str | None) -> Session:
        password_hash = await self.hasher.hash(password)
        name = display_name or email.split("@", 1)[0][:64]
        async with self.db.begin() as session:
            user = await _insert_user(session, email, password_hash, name)
            if user is None:
                raise EmailTaken(f"{email} is already registered")
            return await self._open_session(session, user)

    async def login(self, email: str, password: str) -> Session:
        async with self.db.begin() as session:
            user = await user_rows.by_email(session, email)
        ok = await self.hasher.verify(password, user.password_hash if user else None)
        if not ok or user is None:
            raise InvalidCredentials()
        async with self.db.begin() as session:
            return await self._open_session(session, user)

    async def refresh(self, refresh_token: str) -> Session:
        claims = self.tokens.decode_refresh(refresh_token)
        now = datetime.now(UTC)
        reused = False
        async with self.db.begin() as session:
            found = await token_rows.lock_token(session, claims.token_id)
            if found is None:
                raise InvalidToken()
            token, family = found
            if token.token_hash != token_digest(refresh_token) or family.user_id != claims.user_id:
                raise InvalidToken()
            if family.revoked_at is not None or token.expires_at <= now:
                raise InvalidToken()
            if token.rotated_at is not None:
                # Reuse of a rotated token: revoke the whole family (committed below).
                await token_rows.revoke_family(session, family.id, now, "reuse")
                reused = True
            else:
                await token_rows.mark_rotated(session, token.id, now)
                user = await user_rows.by_id(session, claims.user_id)
                if user is None:
                    raise InvalidToken()
                return await self._issue(session, user, family.id)
        if reused:
            await self._revoke_access(claims.session_id)
        raise InvalidToken("Refresh token was already used; the session is revoked")

    async def logout(self, caller: AccessClaims, refresh_token: str) -> None:
        claims = self.tokens.decode_refresh(refresh_token)
        if claims.user_id != caller.user_id:
            raise InvalidToken()
        async with self.db.begin() as session:
            found = await token_rows.lock_token(session, claims.token_id)
            if found is None or found[0].token_hash != token_digest(refresh_token):
                raise InvalidToken()
            await token_rows.revoke_family(session, claims.session_id, datetime.now(UTC), "logout")
        await self._revoke_access(claims.session_id)
        if caller.session_id != claims.session_id:
            await self._revoke_access(caller.session_id)

    async def authenticate(self, access_token: str) -> AccessClaims:
        claims = self.tokens.decode_access(access_token)
        if await self.sessions.is_revoked(claims.session_id):
            raise Unauthorized(SIGNED_OUT)
        return claims

    def verify(self, access_token: str) -> AccessClaims:
        """The token's claims, without the sign-out check: the caller must make it (the
        reserve script does, in the same round trip as the reserve)."""
        return self.tokens.decode_access(access_token)

    async def me(self, caller: AccessClaims) -> User:
        """The caller's account. When it is gone, the session is signed out too, so the
        routes that never read PostgreSQL (reserve) refuse it from then on."""
        async with self.db.begin() as session:
            user = await user_rows.by_id(session, caller.user_id)
        if user is None:
            await self._revoke_access(caller.session_id)
            raise Unauthorized("Account no longer exists")
        return user

    async def _revoke_access(self, session_id: str) -> None:
        """Access tokens of this session stop working at once (they live at most their TTL)."""
        await self.sessions.revoke(session_id)

    async def _open_session(self, session: AsyncSession, user: User) -> Session:
        family_id = secrets.token_hex(16)
        await token_rows.create_family(session, family_id, user.id)
        return await self._issue(session, user, family_id)

    async def _issue(self, session: AsyncSession, user: User, family_id: str) -> Session:
        refresh, token_id = self.tokens.issue_refresh(user.id, family_id)
        await token_rows.add_token(
            session,
            token_id=token_id,
            family_id=family_id,
            token_hash=token_digest(refresh),
            expires_at=datetime.now(UTC)
            + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
        )
        return Session(
            user=user,
            access_token=self.tokens.issue_access(user.id, user.role, family_id, user.display_name),
            refresh_token=refresh,
            expires_in=self.settings.access_token_ttl_seconds,
        )

    async def ensure_admin(self, email: str, password: str) -> User:
        """Create the admin account, or make an existing account admin with this password."""
        password_hash = await self.hasher.hash(password)
        async with self.db.begin() as session:
            user = await _insert_user(session, email, password_hash, "admin", role="admin")
            if user is None:
                existing = await user_rows.by_email(session, email)
                assert existing is not None
                await user_rows.set_admin(session, existing.id, password_hash)
                existing.role = "admin"
                user = existing
            return user


async def _insert_user(
    session: AsyncSession, email: str, password_hash: str, name: str, role: str = "customer"
) -> User | None:
    """A new account under a new id (emails kept lower-case); None when the email is taken."""
    return await user_rows.insert_user(
        session,
        user_id=keys.new_id(),
        email=email.lower(),
        password_hash=password_hash,
        display_name=name,
        role=role,
    )
