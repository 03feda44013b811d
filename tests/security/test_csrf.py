"""CSRF: every state-changing route that a session cookie can reach refuses a request without the
session's own CSRF token. The routes come from the app's route table, so a new form route
without CsrfDep fails here. Token-API routes are left out on purpose: they never accept the
cookie (the authorization matrix checks that a logged-in browser gets 401 there)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.auth import service as auth_service
from app.auth.security import token_digest
from app.deps import SESSION_COOKIE
from app.models import ApiToken, ProjectMember, TrainingRound, User, WebSession
from tests.security import route_table as rt
from tests.security.test_authz_matrix import build_world, fill_path


def _session(db, user) -> tuple[str, str]:
    cookie = auth_service.start_session(db, user=user, hours=1)
    csrf = db.scalar(select(WebSession.csrf_token).where(WebSession.token_hash == token_digest(cookie)))
    db.commit()
    return cookie, csrf


def test_every_cookie_state_change_needs_the_sessions_csrf_token(app, db, settings):
    world = build_world(db, settings)
    admin = world.users["admin"]  # passes every cookie check, so only CSRF can refuse
    world.path_values["assignment_id"] = str(world.assignments["admin"])
    cookie, _csrf = _session(db, admin)
    _other_cookie, foreign_csrf = _session(db, world.users["labeler"])

    guarded = [
        e
        for e in rt.app_routes(app)
        if e.method in rt.UNSAFE_METHODS
        and e.category not in rt.TOKEN_CATEGORIES
        and (e.method, e.path) not in rt.CSRF_EXEMPT
    ]
    assert len(guarded) >= 20 and ("POST", "/logout") in {(e.method, e.path) for e in guarded}
    assert set(rt.CSRF_EXEMPT) == {("POST", "/login")}  # a new exemption is a decision to review
    attempts = {
        "no token": ({}, {}),
        "a made-up header": ({"X-CSRF-Token": "forged"}, {}),
        "another session's token in the form": ({}, {"csrf_token": foreign_csrf}),
    }
    unguarded = []
    with TestClient(app, follow_redirects=False) as client:
        for entry in guarded:
            url = fill_path(entry.path, world.path_values)
            for what, (headers, form) in attempts.items():
                client.cookies.clear()
                response = client.request(
                    entry.method, url, data=form or None, headers={"Cookie": f"{SESSION_COOKIE}={cookie}", **headers}
                )
                if response.status_code != 403 or "CSRF" not in response.text:
                    unguarded.append(f"{entry.method} {entry.path} with {what}: {response.status_code}")
    assert not unguarded, (
        "State changes that a session cookie reaches must declare dependencies=[CsrfDep] (or, "
        "if they need none, be listed in CSRF_EXEMPT with the reason):\n" + "\n".join(unguarded)
    )

    # None of the refused requests changed anything.
    db.expire_all()
    assert db.scalar(select(WebSession).where(WebSession.token_hash == token_digest(cookie))) is not None  # no logout
    assert db.scalar(select(ApiToken).where(ApiToken.id == int(world.path_values["token_id"]))).revoked_at is None
    victim = db.get(User, int(world.path_values["user_id"]))
    assert victim.is_active
    assert db.scalar(select(ProjectMember).where(ProjectMember.user_id == victim.id)) is not None
    assert db.get(TrainingRound, int(world.path_values["round_id"])).status == "labeling"
    assert db.scalar(select(func.count()).select_from(TrainingRound)) == 1  # no round launched


def test_a_cross_site_login_post_is_refused_and_starts_no_session(app, db):
    """Login CSRF: a hostile page posting the attacker's credentials must not log the visitor in."""
    from tests.factories import PASSWORD, make_user

    user = make_user(db, role="labeler")
    form = {"email": user.email, "password": PASSWORD}
    cross_site = {
        "another Origin": {"Origin": "https://evil.example"},
        "Sec-Fetch-Site: cross-site": {"Sec-Fetch-Site": "cross-site"},
        "a sibling subdomain": {"Sec-Fetch-Site": "same-site", "Origin": "http://other.testserver"},
    }
    with TestClient(app, follow_redirects=False) as client:
        for what, headers in cross_site.items():
            response = client.post("/login", data=form, headers=headers)
            assert response.status_code == 403 and "CSRF" in response.text, what
            assert SESSION_COOKIE not in response.cookies, what
        assert db.scalar(select(func.count()).select_from(WebSession)) == 0
        # The site's own form (same Origin) and non-browser clients (no Origin) log in.
        own = client.post("/login", data=form, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
        assert own.status_code == 303 and SESSION_COOKIE in own.cookies
    with TestClient(app, follow_redirects=False) as client:
        assert client.post("/login", data=form).status_code == 303
