"""Auth routes: signup, login, refresh, logout, me."""

from __future__ import annotations

from fastapi import APIRouter, status
from starlette.responses import Response

from app.api import render
from app.api.deps import ClientIP, ContainerDep, CurrentUser
from app.api.responses import RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, UNAVAILABLE, VALIDATION, errors
from app.api.schemas import LoginBody, RefreshBody, SessionOut, SignupBody, UserOut

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses=errors((409, "EMAIL_TAKEN"), VALIDATION, TOO_LARGE, RATE_LIMITED, UNAVAILABLE),
)
async def signup(body: SignupBody, container: ContainerDep, ip: ClientIP) -> Response:
    await container.rate_limiter.hit("signup_ip", ip)
    session = await container.auth_service.signup(body.email, body.password, body.display_name)
    return render.JSONBody(render.session(session), status_code=201)


@router.post(
    "/login",
    response_model=SessionOut,
    responses=errors(
        (401, "INVALID_CREDENTIALS"), VALIDATION, TOO_LARGE, RATE_LIMITED, UNAVAILABLE
    ),
)
async def login(body: LoginBody, container: ContainerDep, ip: ClientIP) -> Response:
    email = body.email.strip()
    # Per-address attempts, then this account's failures (see app/services/ratelimit.py).
    async with container.rate_limiter.login_attempt(email.lower(), ip):
        session = await container.auth_service.login(email, body.password)
    return render.JSONBody(render.session(session))


@router.post(
    "/refresh",
    response_model=SessionOut,
    responses=errors((401, "INVALID_TOKEN"), VALIDATION, TOO_LARGE, UNAVAILABLE),
)
async def refresh(body: RefreshBody, container: ContainerDep) -> Response:
    session = await container.auth_service.refresh(body.refresh_token)
    return render.JSONBody(render.session(session))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(UNAUTHORIZED, (401, "INVALID_TOKEN"), VALIDATION, TOO_LARGE, UNAVAILABLE),
)
async def logout(body: RefreshBody, caller: CurrentUser, container: ContainerDep) -> Response:
    await container.auth_service.logout(caller, body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut, responses=errors(UNAUTHORIZED, UNAVAILABLE))
async def me(caller: CurrentUser, container: ContainerDep) -> Response:
    return render.JSONBody(render.user(await container.auth_service.me(caller)))
