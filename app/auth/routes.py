"""Login and logout pages."""

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse

from app.auth import service
from app.deps import SESSION_COOKIE, CsrfDep, DbDep, OptionalUserDep, SettingsDep
from app.settings import Settings
from app.web import page

router = APIRouter(tags=["auth"])


def _safe_next(target: str | None) -> str:
    """Only paths on this site: never redirect to another host after login. Browsers read "\\" as
    "/" and drop tabs and newlines, so "/\\evil.com" or "/<tab>/evil.com" would leave the site too."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    return target


def _cookie_flags(request: Request, settings: Settings) -> dict:
    """HttpOnly (no script reads it) and SameSite=Lax (not sent on cross-site posts). Secure when
    the setting says so or the request came over https: directly, or through a proxy whose
    X-Forwarded-Proto uvicorn trusts (its FORWARDED_ALLOW_IPS, default 127.0.0.1)."""
    secure = settings.secure_cookies or request.url.scheme == "https"
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}


def same_origin_only(request: Request) -> None:
    """CSRF protection for the login form, where no session (and so no CSRF token) exists yet: a
    hostile page could otherwise log a visitor into the attacker's account. Browsers mark every
    cross-site form post (Sec-Fetch-Site, Origin); clients that are not browsers send neither and
    are not affected."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    own_origin = f"{request.url.scheme}://{request.url.netloc}"
    if fetch_site in ("cross-site", "same-site") or (origin is not None and origin != own_origin):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Cross-site login refused (CSRF): open the login page of this site and log in there.",
        )


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


@router.get("/login", include_in_schema=False)
def login_form(request: Request, user: OptionalUserDep, next_url: Annotated[str, Query(alias="next")] = "/"):
    if user is not None:
        return RedirectResponse(_safe_next(next_url), status_code=303)
    return page(request, "auth/login.html", {"next": _safe_next(next_url), "error": None})


@router.post("/login", include_in_schema=False, dependencies=[Depends(same_origin_only)])
def login(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next_url: Annotated[str, Form(alias="next")] = "/",
):
    client = request.client.host if request.client else "unknown"
    try:
        user = service.authenticate(db, email=email, password=password, client=client)
    except service.LoginRateLimited as limited:
        wait = limited.retry_after_seconds
        response = page(
            request,
            "auth/login.html",
            {
                "next": _safe_next(next_url),
                "email": email,
                "error": f"Too many failed logins. Try again in {_minutes(wait)}.",
            },
            status_code=429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    if user is None:
        return page(
            request,
            "auth/login.html",
            {"next": _safe_next(next_url), "email": email, "error": "Wrong email or password."},
            status_code=401,
        )
    token = service.start_session(db, user=user, hours=settings.session_hours)
    response = RedirectResponse(_safe_next(next_url), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_hours * 3600, **_cookie_flags(request, settings)
    )
    return response


@router.post("/logout", include_in_schema=False, dependencies=[CsrfDep])
def logout(request: Request, db: DbDep, settings: SettingsDep, _user: OptionalUserDep):
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        service.end_session(db, token=token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, **_cookie_flags(request, settings))
    return response
