"""Users, login sessions and API tokens."""

from __future__ import annotations

import math
import secrets
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.auth.security import (
    API_TOKEN_PREFIX,
    hash_password,
    new_token,
    password_needs_rehash,
    token_digest,
    verify_password,
    verify_unknown_user,
)
from app.db import is_sqlite, start_write_transaction
from app.models import ApiToken, LoginAttempt, Role, TokenScope, User, WebSession, utcnow

LOGIN_WINDOW = timedelta(minutes=15)
MAX_FAILED_LOGINS = 10
"""After this many failed logins within LOGIN_WINDOW, for one email or from one client address,
logins are refused (HTTP 429 with Retry-After) until the oldest of them leaves the window."""


class LoginRateLimited(Exception):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


def create_user(db: Session, *, email: str, password: str, role: str = Role.labeler, display_name: str = "") -> User:
    user = User(
        email=email.strip().lower(),
        password_hash=hash_password(password),
        role=role,
        display_name=display_name or email.split("@")[0],
    )
    db.add(user)
    db.flush()
    return user


def get_user_by_email(db: Session, *, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == email.strip().lower()))


def authenticate(db: Session, *, email: str, password: str, client: str) -> User | None:
    """Checks a password, counting failures per email and per client address.
    Raises LoginRateLimited (before looking at the password) while either is over the limit."""
    # Reads then writes (attempts, sessions): on SQLite take the write lock at BEGIN, or
    # concurrent logins fail with "database is locked" when the read transaction tries to upgrade.
    start_write_transaction(db)
    email = email.strip().lower()
    now = utcnow()
    since = now - LOGIN_WINDOW
    # The MAX_FAILED_LOGINS-th newest failure in the window: while it exists the limit is
    # reached, and when it leaves the window one more attempt is allowed.
    limiting = db.scalar(
        select(LoginAttempt.at)
        .where(LoginAttempt.at >= since, (LoginAttempt.email == email) | (LoginAttempt.client == client))
        .order_by(LoginAttempt.at.desc())
        .offset(MAX_FAILED_LOGINS - 1)
        .limit(1)
    )
    if limiting is not None:
        raise LoginRateLimited(max(1, math.ceil((limiting + LOGIN_WINDOW - now).total_seconds())))
    user = get_user_by_email(db, email=email)
    # Every refusal costs one password check, so timing does not tell unknown or inactive accounts apart.
    ok = verify_password(user.password_hash, password) if user is not None else verify_unknown_user(password)
    if not ok or user is None or not user.is_active:
        db.execute(delete(LoginAttempt).where(LoginAttempt.at < since))  # keeps the table to one window
        db.add(LoginAttempt(email=email[:320], client=client[:64], at=now))
        return None
    db.execute(delete(LoginAttempt).where(LoginAttempt.email == user.email))
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)  # made with older argon2 parameters: upgrade it now
    return user


def start_session(db: Session, *, user: User, hours: int) -> str:
    """Returns the cookie value; only its hash is stored."""
    token = new_token()
    db.add(
        WebSession(
            token_hash=token_digest(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(24),
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    db.flush()
    return token


class LoginSession(NamedTuple):
    user: User
    csrf_token: str


# Every logged-in request runs this: one statement, built once, with only the user as an entity.
_LIVE_SESSION = (
    select(User, WebSession.csrf_token)
    .join(WebSession, WebSession.user_id == User.id)
    .where(WebSession.token_hash == bindparam("token_hash"), WebSession.expires_at >= bindparam("now"), User.is_active)
)


def get_session(db: Session, *, token: str) -> LoginSession | None:
    """The user behind a session cookie, while the session lasts and the account is active.
    Read from the database on every request, so a logout or deactivation takes effect at once."""
    row = db.execute(_LIVE_SESSION, {"token_hash": token_digest(token), "now": utcnow()}).first()
    return None if row is None else LoginSession(*row)


def end_session(db: Session, *, token: str) -> None:
    db.execute(delete(WebSession).where(WebSession.token_hash == token_digest(token)))


def create_api_token(db: Session, *, name: str, scopes: list[str], created_by: User | None) -> tuple[ApiToken, str]:
    """Returns the row and the plaintext token, which is shown once and never stored."""
    for scope in scopes:
        TokenScope(scope)  # raises ValueError naming an unknown scope
    plaintext = new_token(API_TOKEN_PREFIX)
    row = ApiToken(
        name=name,
        prefix=plaintext[:10],
        token_hash=token_digest(plaintext),
        scopes=sorted(set(scopes)),
        created_by_id=created_by.id if created_by else None,
    )
    db.add(row)
    db.flush()
    return row, plaintext


def get_api_token(db: Session, *, plaintext: str) -> ApiToken | None:
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(plaintext)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    # Coarse last-used stamp: at most one write per token per minute keeps hot API paths read-only.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        _stamp_last_used(db, token_id=row.id, now=now)
    return row


def _stamp_last_used(db: Session, *, token_id: int, now) -> None:
    """On SQLite a read-only request (GET) began DEFERRED; if another connection committed since its
    first read, it can no longer write and SQLite says "database is locked" at once. The stamp is
    not worth failing the request for: it is skipped and the token's next call sets it."""
    try:
        with db.begin_nested():
            db.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    except OperationalError as exc:
        if not is_sqlite(db) or "locked" not in str(exc.orig):
            raise


def revoke_api_token(db: Session, *, token_id: int) -> bool:
    row = db.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def list_api_tokens(db: Session) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).order_by(ApiToken.id.desc())))
