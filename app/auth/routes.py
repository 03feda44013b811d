"""Login and logout pages."""
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse

from app.auth import service
from app.deps import SESSION_COOKIE, CsrfDep, DbDep, OptionalUserDep, SettingsDep
from app.web import page

router = APIRouter(tags=["auth"])


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never redirect to another host after login.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/login", include_in_schema=False)
def login_form(request: Request, user: OptionalUserDep, next: str = "/"):
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return page(request, "auth/login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", include_in_schema=False)
def login(request: Request, db: DbDep, settings: SettingsDep,
          email: Annotated[str, Form()], password: Annotated[str, Form()], next: Annotated[str, Form()] = "/"):
    client = request.client.host if request.client else "unknown"
    try:
        user = service.authenticate(db, email=email, password=password, client=client)
    except service.LoginRateLimited:
        return page(request, "auth/login.html", {"next": _safe_next(next), "email": email,
                    "error": "Too many failed logins. Wait 15 minutes and try again."}, status_code=429)
    if user is None:
        return page(request, "auth/login.html", {"next": _safe_next(next), "email": email,
                    "error": "Wrong email or password."}, status_code=401)
    token = service.start_session(db, user=user, hours=settings.session_hours)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=settings.secure_cookies,
                        max_age=settings.session_hours * 3600, path="/")
    return response


@router.post("/logout", include_in_schema=False, dependencies=[CsrfDep])
def logout(request: Request, db: DbDep, _user: OptionalUserDep):
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        service.end_session(db, token=token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
