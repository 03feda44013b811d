"""Accounts, project membership and API tokens, as the admin pages manage them."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.security import hash_password
from app.models import ApiToken, Project, ProjectMember, Role, TokenScope, User, WebSession

# Deliberately loose: the address is a login name here, nothing is mailed to it.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AdminError(ValueError):
    """A refused admin action; `field` names the form field the message belongs to."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def generate_password() -> str:
    """About 96 random bits, URL-safe so it can be copied from a terminal or a page."""
    return secrets.token_urlsafe(12)


def list_users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.role, User.email)))


def create_account(db: Session, *, email: str, role: str, display_name: str = "") -> tuple[User, str]:
    """Creates a user with a generated password; returns it in plaintext, to be shown once."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise AdminError("email", "enter an address like name@example.com")
    if role not in (Role.admin, Role.labeler):
        raise AdminError("role", "choose admin or labeler")
    if auth_service.get_user_by_email(db, email=email) is not None:
        raise AdminError("email", f"{email} already has an account")
    password = generate_password()
    user = auth_service.create_user(db, email=email, password=password, role=role, display_name=display_name.strip())
    return user, password


def _get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise AdminError("user", f"no user with id {user_id}")
    return user


def set_active(db: Session, *, user_id: int, active: bool, acting: User) -> User:
    """Deactivating ends the user's sessions at once; their rankings are kept."""
    user = _get_user(db, user_id)
    if not active and user.id == acting.id:
        raise AdminError("user", "you cannot deactivate your own account")
    user.is_active = active
    if not active:
        db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    db.flush()
    return user


def reset_password(db: Session, *, user_id: int) -> tuple[User, str]:
    user = _get_user(db, user_id)
    password = generate_password()
    user.password_hash = hash_password(password)
    db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    db.flush()
    return user, password


def project_members(db: Session, *, project_id: int) -> list[User]:
    return list(
        db.scalars(
            select(User)
            .join(ProjectMember, ProjectMember.user_id == User.id)
            .where(ProjectMember.project_id == project_id)
            .order_by(User.email)
        )
    )


def memberships(db: Session) -> dict[int, list[Project]]:
    """user id -> the projects they belong to (for the users page)."""
    rows = db.execute(
        select(ProjectMember.user_id, Project)
        .join(Project, Project.id == ProjectMember.project_id)
        .order_by(Project.name)
    )
    result: dict[int, list[Project]] = {}
    for user_id, project in rows:
        result.setdefault(user_id, []).append(project)
    return result


def add_member(db: Session, *, project_id: int, user_id: int) -> bool:
    """Returns False when the user already belongs to the project."""
    if db.get(Project, project_id) is None:
        raise AdminError("project", f"no project with id {project_id}")
    _get_user(db, user_id)
    if db.get(ProjectMember, (project_id, user_id)) is not None:
        return False
    db.add(ProjectMember(project_id=project_id, user_id=user_id))
    db.flush()
    return True


def remove_member(db: Session, *, project_id: int, user_id: int) -> bool:
    result = db.execute(
        delete(ProjectMember).where(ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
    )
    return cast(CursorResult, result).rowcount > 0  # a DELETE's result (typed as the wider Result)


@dataclass
class TokenRow:
    token: ApiToken
    created_by: str


def list_tokens(db: Session) -> list[TokenRow]:
    creators: dict[int | None, str] = dict(db.execute(select(User.id, User.email)).all())
    return [TokenRow(token=t, created_by=creators.get(t.created_by_id, "—")) for t in auth_service.list_api_tokens(db)]


def create_token(db: Session, *, name: str, scopes: list[str], created_by: User) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 200:
        raise AdminError("name", "give the token a name of 1–200 characters (what uses it?)")
    known = {s.value for s in TokenScope}
    unknown = sorted(set(scopes) - known)
    if unknown:
        raise AdminError("scopes", f"unknown scope {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    if not scopes:
        raise AdminError("scopes", "choose at least one scope")
    return auth_service.create_api_token(db, name=name, scopes=scopes, created_by=created_by)


def revoke_token(db: Session, *, token_id: int) -> None:
    if not auth_service.revoke_api_token(db, token_id=token_id):
        raise AdminError("token", f"token {token_id} does not exist or is already revoked")
    db.flush()
