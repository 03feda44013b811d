"""Admin pages for accounts and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.admin import service
from app.deps import AdminDep, CsrfDep, DbDep
from app.models import Role, TokenScope
from app.web import page

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)


def _users_page(request: Request, db, *, errors=None, form=None, secret=None, status_code=200):
    return page(
        request,
        "admin/users.html",
        {
            "users": service.list_users(db),
            "memberships": service.memberships(db),
            "roles": [r.value for r in Role],
            "errors": errors or {},
            "form": form or {},
            "secret": secret,
        },
        status_code=status_code,
    )


@router.get("/users")
def users(request: Request, db: DbDep, _admin: AdminDep):
    return _users_page(request, db)


@router.post("/users", dependencies=[CsrfDep])
def create_user(
    request: Request,
    db: DbDep,
    _admin: AdminDep,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = Role.labeler,
    display_name: Annotated[str, Form()] = "",
):
    form = {"email": email, "role": role, "display_name": display_name}
    try:
        user, password = service.create_account(db, email=email, role=role, display_name=display_name)
    except service.AdminError as exc:
        return _users_page(request, db, errors={exc.field: exc.message}, form=form, status_code=422)
    secret = {"what": f"Initial password for {user.email}", "value": password}
    return _users_page(request, db, secret=secret, status_code=201)


@router.post("/users/{user_id}/active", dependencies=[CsrfDep])
def set_active(request: Request, db: DbDep, admin: AdminDep, user_id: int, active: Annotated[bool, Form()]):
    try:
        service.set_active(db, user_id=user_id, active=active, acting=admin)
    except service.AdminError as exc:
        return _users_page(request, db, errors={"table": exc.message}, status_code=422)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/users/{user_id}/password", dependencies=[CsrfDep])
def reset_password(request: Request, db: DbDep, _admin: AdminDep, user_id: int):
    try:
        user, password = service.reset_password(db, user_id=user_id)
    except service.AdminError as exc:
        return _users_page(request, db, errors={"table": exc.message}, status_code=404)
    return _users_page(request, db, secret={"what": f"New password for {user.email}", "value": password})


def _tokens_page(request: Request, db, *, errors=None, form=None, secret=None, status_code=200):
    return page(
        request,
        "admin/tokens.html",
        {
            "tokens": service.list_tokens(db),
            "scopes": [s.value for s in TokenScope],
            "errors": errors or {},
            "form": form or {"scopes": []},
            "secret": secret,
        },
        status_code=status_code,
    )


@router.get("/tokens")
def tokens(request: Request, db: DbDep, _admin: AdminDep):
    return _tokens_page(request, db)


@router.post("/tokens", dependencies=[CsrfDep])
def create_token(
    request: Request,
    db: DbDep,
    admin: AdminDep,
    name: Annotated[str, Form()] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
):
    scopes = scopes or []  # None, not [], as the default: a shared mutable default would leak between calls
    try:
        row, plaintext = service.create_token(db, name=name, scopes=scopes, created_by=admin)
    except service.AdminError as exc:
        return _tokens_page(
            request, db, errors={exc.field: exc.message}, form={"name": name, "scopes": scopes}, status_code=422
        )
    secret = {"what": f"API token “{row.name}” ({', '.join(row.scopes)})", "value": plaintext}
    return _tokens_page(request, db, secret=secret, status_code=201)


@router.post("/tokens/{token_id}/revoke", dependencies=[CsrfDep])
def revoke_token(request: Request, db: DbDep, _admin: AdminDep, token_id: int):
    try:
        service.revoke_token(db, token_id=token_id)
    except service.AdminError as exc:
        return _tokens_page(request, db, errors={"table": exc.message}, status_code=404)
    return RedirectResponse("/admin/tokens", status_code=303)
