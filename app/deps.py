"""Typed FastAPI dependencies: DB session, current user, API token scopes, CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.auth import service as auth_service
from app.auth.security import constant_time_equal
from app.models import ApiToken, TokenScope, User
from app.settings import Settings

SESSION_COOKIE = "ranklab_session"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Requests that only read; the others take SQLite's write lock when their transaction begins."""


# Dependencies that do no I/O are `async def`: a plain `def` would cost a hop to the threadpool
# and back on every request, which is a good part of a fast request's CPU.


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One session per request; the request owns the commit (nothing is committed on error).

    Creating a Session does no I/O (it connects on first use), so only its end runs in a worker
    thread, with a limiter of its own: waiting for a free worker while holding a pooled connection
    could deadlock against requests that wait for a connection (as FastAPI does for sync generators)."""
    sessions = (
        request.app.state.sessionmaker if request.method in READ_ONLY_METHODS else request.app.state.write_sessionmaker
    )
    db = sessions()
    try:
        yield db
    except BaseException:
        await anyio.to_thread.run_sync(partial(_end_session, db, commit=False), limiter=anyio.CapacityLimiter(1))
        raise
    await anyio.to_thread.run_sync(partial(_end_session, db, commit=True), limiter=anyio.CapacityLimiter(1))


def _end_session(db: Session, *, commit: bool) -> None:
    try:
        if commit:
            db.commit()
        else:
            db.rollback()
    finally:
        db.close()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": commit right after the endpoint returns, before the response is sent,
# so a client never sees success for something that was not stored.
DbDep = Annotated[Session, Depends(get_db, scope="function")]


class LoginRequired(Exception):
    """Raised for anonymous browser requests; the app turns it into a redirect to /login."""


def optional_user(request: Request, db: DbDep) -> User | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    session = auth_service.get_session(db, token=token)
    if session is None:
        return None
    request.state.user = session.user
    request.state.csrf_token = session.csrf_token
    return session.user


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise LoginRequired()
    return user


async def current_admin(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Admins only.")
    return user


UserDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(current_admin)]
OptionalUserDep = Annotated[User | None, Depends(optional_user)]


async def csrf_protect(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> None:
    """Every cookie-authenticated state change must echo the session's CSRF token
    (htmx sends it as a header from <body hx-headers>; plain forms as a hidden field)."""
    if user is None:
        return  # not logged in: the route's own auth dependency answers
    form = None
    if request.headers.get("X-CSRF-Token") is None and is_form(request):
        form = await request.form()
    check_csrf(request, form)


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    )


def check_csrf(request: Request, form: FormData | None) -> None:
    """The header, else the form's hidden field, must equal the logged-in session's token."""
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and form is not None:
        field = form.get("csrf_token")
        sent = field if isinstance(field, str) else None  # an uploaded file is no token
    if not sent or not constant_time_equal(sent, request.state.csrf_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Missing or wrong CSRF token: reload the page and try again.")


CsrfDep = Depends(csrf_protect)


def require_scope(scope: TokenScope | None):
    """Bearer-token auth for /api/v1. The admin scope implies every other scope; None accepts any valid token."""

    def dependency(request: Request, db: DbDep) -> ApiToken:
        header = request.headers.get("Authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Send an API token as 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        row = auth_service.get_api_token(db, plaintext=token.strip())
        if row is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "Unknown or revoked API token.", headers={"WWW-Authenticate": "Bearer"}
            )
        if scope is not None and scope not in row.scopes and TokenScope.admin not in row.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"This token lacks the '{scope}' scope.")
        request.state.api_token = row
        return row

    return dependency


UploadTokenDep = Annotated[ApiToken, Depends(require_scope(TokenScope.upload))]
ExportTokenDep = Annotated[ApiToken, Depends(require_scope(TokenScope.export))]
AdminTokenDep = Annotated[ApiToken, Depends(require_scope(TokenScope.admin))]
AnyTokenDep = Annotated[ApiToken, Depends(require_scope(None))]
"""Any valid token, whatever its scopes (read-only project listings)."""
