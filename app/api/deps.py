"""Request dependencies as `Annotated` aliases: the container, the caller, the admin.

Every dependency is `async def`, even those that never await: FastAPI runs a plain
`def` dependency in a worker thread, a thread hand-off on every request.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.container import Container
from app.errors import Forbidden, Unauthorized
from app.services.tokens import AccessClaims


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def bearer_token(request: Request) -> str:
    return parse_bearer(request.headers.get("authorization", ""))


def parse_bearer(header: str) -> str:
    """The token of an `Authorization: Bearer <token>` value; 401 for anything else."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 4096:
        raise Unauthorized("Missing or malformed Authorization header")
    return token.strip()


# The bearer scheme, for the OpenAPI schema only: it puts `bearerAuth` in
# components.securitySchemes and in the `security` of every operation that depends on it,
# so a client (or a schema-driven test) knows which operations need a token. It never
# answers itself (auto_error=False); parse_bearer decides, with the contract's 401.
BEARER = HTTPBearer(scheme_name="bearerAuth", bearerFormat="JWT", auto_error=False)
BearerDeclared = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


async def current_user(
    request: Request, container: ContainerDep, _declared: BearerDeclared
) -> AccessClaims:
    return await container.auth_service.authenticate(bearer_token(request))


CurrentUser = Annotated[AccessClaims, Depends(current_user)]


async def current_admin(caller: CurrentUser, container: ContainerDep) -> AccessClaims:
    """An admin by the account as it is now, not by the token's claim: a deleted account
    is 401 (and its session signed out), a demoted one 403. Admin calls are rare; the
    one PostgreSQL read is cheap next to the write that follows."""
    if caller.role != "admin":
        raise Forbidden("Admins only")
    account = await container.auth_service.me(caller)
    if account.role != "admin":
        raise Forbidden("Admins only")
    return caller


CurrentAdmin = Annotated[AccessClaims, Depends(current_admin)]


def client_ip(request: Request, trusted_proxies: list[str]) -> str:
    """The peer address, or X-Forwarded-For's last untrusted hop behind a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or peer not in trusted_proxies:
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop in trusted_proxies:
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return peer
    return peer


async def get_client_ip(request: Request, container: ContainerDep) -> str:
    return client_ip(request, container.settings.trusted_proxies)


ClientIP = Annotated[str, Depends(get_client_ip)]
