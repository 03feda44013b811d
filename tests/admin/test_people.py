"""Admin pages for accounts and API tokens, through HTTP on SQLite and Postgres."""

from sqlalchemy import select

from app.auth.security import token_digest
from app.models import ApiToken, User, WebSession
from tests.admin.helpers import admin_client, fresh, shown_secret
from tests.factories import PASSWORD, csrf_of, login, make_user


def test_admin_pages_need_an_admin(client, other_client, db):
    for path in ("/admin/users", "/admin/tokens"):
        response = other_client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == f"/login?next={path}"
    login(client, make_user(db))
    assert client.get("/admin/users").status_code == 403
    assert (
        client.post("/admin/users", data={"email": "x@example.com", "csrf_token": csrf_of(client, db)}).status_code
        == 403
    )


def test_posts_need_the_csrf_token(client, db):
    _admin, csrf = admin_client(client, db)
    assert client.post("/admin/users", data={"email": "new@example.com"}).status_code == 403
    assert (
        client.post("/admin/tokens", data={"name": "x", "scopes": "upload", "csrf_token": "wrong"}).status_code == 403
    )
    fresh(db)
    assert db.scalar(select(User).where(User.email == "new@example.com")) is None
    assert db.scalar(select(ApiToken)) is None
    # The header form (what htmx sends) works too.
    response = client.post("/admin/users", data={"email": "new@example.com"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201


def test_create_user_shows_password_once_and_it_works(client, other_client, db):
    _admin, csrf = admin_client(client, db)
    response = client.post(
        "/admin/users",
        data={"email": " Ann@Example.com ", "role": "labeler", "display_name": "Ann", "csrf_token": csrf},
    )
    assert response.status_code == 201
    password = shown_secret(response.text)
    assert "ann@example.com" in response.text
    assert password not in client.get("/admin/users").text
    fresh(db)
    stored = db.scalar(select(User).where(User.email == "ann@example.com"))
    assert stored.role == "labeler" and password not in stored.password_hash
    response = other_client.post(
        "/login", data={"email": "ann@example.com", "password": password}, follow_redirects=False
    )
    assert response.status_code == 303


def test_create_user_errors_are_shown_beside_the_field(client, db):
    admin, csrf = admin_client(client, db)
    response = client.post("/admin/users", data={"email": admin.email, "csrf_token": csrf})
    assert response.status_code == 422
    assert f"{admin.email} already has an account" in response.text and 'id="email-error"' in response.text
    response = client.post("/admin/users", data={"email": "not-an-email", "csrf_token": csrf})
    assert response.status_code == 422 and "enter an address like" in response.text
    assert 'value="not-an-email"' in response.text  # what was typed is kept
    response = client.post("/admin/users", data={"email": "a@b.c", "role": "root", "csrf_token": csrf})
    assert response.status_code == 422 and "choose admin or labeler" in response.text


def test_deactivate_ends_sessions_and_blocks_login(client, other_client, db):
    admin, csrf = admin_client(client, db)
    labeler = make_user(db)
    login(other_client, labeler)
    response = client.post(
        f"/admin/users/{labeler.id}/active", data={"active": "false", "csrf_token": csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    fresh(db)
    assert db.get(User, labeler.id).is_active is False
    assert db.scalar(select(WebSession).where(WebSession.user_id == labeler.id)) is None
    response = other_client.post("/login", data={"email": labeler.email, "password": PASSWORD})
    assert response.status_code == 401
    # An admin cannot lock themselves out.
    response = client.post(f"/admin/users/{admin.id}/active", data={"active": "false", "csrf_token": csrf})
    assert response.status_code == 422 and "cannot deactivate your own account" in response.text
    client.post(f"/admin/users/{labeler.id}/active", data={"active": "true", "csrf_token": csrf})
    fresh(db)
    assert db.get(User, labeler.id).is_active is True


def test_reset_password_replaces_the_old_one(client, other_client, db):
    _admin, csrf = admin_client(client, db)
    labeler = make_user(db)
    response = client.post(f"/admin/users/{labeler.id}/password", data={"csrf_token": csrf})
    new_password = shown_secret(response.text)
    assert other_client.post("/login", data={"email": labeler.email, "password": PASSWORD}).status_code == 401
    response = other_client.post(
        "/login", data={"email": labeler.email, "password": new_password}, follow_redirects=False
    )
    assert response.status_code == 303


def test_token_is_shown_once_stored_hashed_and_listed(client, db):
    admin, csrf = admin_client(client, db)
    response = client.post(
        "/admin/tokens", data={"name": "nightly export", "scopes": ["export", "upload"], "csrf_token": csrf}
    )
    assert response.status_code == 201
    plaintext = shown_secret(response.text)
    assert plaintext.startswith("rl_")
    fresh(db)
    row = db.scalar(select(ApiToken))
    assert row is not None
    assert row.token_hash == token_digest(plaintext) and row.scopes == ["export", "upload"]
    assert row.created_by_id == admin.id and plaintext.startswith(row.prefix)
    listing = client.get("/admin/tokens").text
    assert plaintext not in listing
    assert (
        row.prefix in listing and "nightly export" in listing and "export, upload" in listing and admin.email in listing
    )


def test_token_form_validation(client, db):
    _admin, csrf = admin_client(client, db)
    response = client.post("/admin/tokens", data={"name": "x", "csrf_token": csrf})
    assert response.status_code == 422 and "choose at least one scope" in response.text
    response = client.post("/admin/tokens", data={"name": "x", "scopes": "delete", "csrf_token": csrf})
    assert response.status_code == 422 and "unknown scope delete" in response.text
    response = client.post("/admin/tokens", data={"name": "  ", "scopes": "upload", "csrf_token": csrf})
    assert response.status_code == 422 and 'id="name-error"' in response.text
    assert db.scalar(select(ApiToken)) is None


def test_revoke_stops_the_token_at_once(client, other_client, db):
    _admin, csrf = admin_client(client, db)
    plaintext = shown_secret(
        client.post("/admin/tokens", data={"name": "ci", "scopes": "upload", "csrf_token": csrf}).text
    )
    fresh(db)
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(plaintext)))
    bearer = {"Authorization": f"Bearer {plaintext}"}
    assert other_client.get("/api/v1/projects", headers=bearer).status_code == 200
    fresh(db)
    assert db.get(ApiToken, row.id).last_used_at is not None  # the list's "last used" column
    response = client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    fresh(db)
    assert db.get(ApiToken, row.id).revoked_at is not None
    assert "revoked" in client.get("/admin/tokens").text
    response = other_client.get("/api/v1/projects", headers=bearer)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    response = client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": csrf})
    assert response.status_code == 404 and "already revoked" in response.text


def test_every_admin_post_needs_the_csrf_token(client, db):
    """Walks the admin routers, so a new admin form without CsrfDep fails here."""
    from fastapi.routing import APIRoute

    from app.admin.people_routes import router as people_router
    from app.admin.routes import pages
    from tests.factories import make_project

    admin, _csrf = admin_client(client, db)
    project = make_project(db)
    labeler = make_user(db)
    ids = {"project_id": project.id, "user_id": labeler.id, "token_id": 1}
    posts = [
        route.path
        for route in [*pages.routes, *people_router.routes]
        if isinstance(route, APIRoute) and "POST" in route.methods
    ]
    assert len(posts) >= 10
    for path in posts:
        response = client.post(
            path.format(**ids),
            data={"active": "false", "user_id": str(labeler.id), "email": "x@example.com", "name": "x"},
        )
        assert response.status_code == 403 and "CSRF" in response.text, path
    fresh(db)
    assert db.get(User, labeler.id).is_active
