from app.models import Role
from tests.factories import PASSWORD, csrf_of, login, make_user


def test_login_sets_httponly_session_and_logout_invalidates_it(client, db):
    user = make_user(db, role=Role.admin)
    response = client.post("/login", data={"email": user.email, "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    old_token = client.cookies.get("ranklab_session")

    assert client.get("/login", follow_redirects=False).status_code == 303  # already logged in

    response = client.post("/logout", data={"csrf_token": csrf_of(client, db)}, follow_redirects=False)
    assert response.status_code == 303
    client.cookies.set("ranklab_session", old_token)
    assert client.get("/login", follow_redirects=False).status_code == 200  # the old cookie no longer works


def test_wrong_password_is_refused_and_logout_needs_csrf(client, db):
    user = make_user(db)
    response = client.post("/login", data={"email": user.email, "password": "nope"})
    assert response.status_code == 401 and "Wrong email or password" in response.text
    login(client, user)
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403


def test_login_is_rate_limited(client, db):
    user = make_user(db)
    for _ in range(10):
        client.post("/login", data={"email": user.email, "password": "nope"})
    response = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429 and "Too many failed logins" in response.text


def test_concurrent_logins_all_succeed(app, db):
    """Logins read then write; on SQLite they must not fail with 'database is locked'."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    users = [make_user(db) for _ in range(8)]

    def log_in(user):
        with TestClient(app) as c:
            return c.post("/login", data={"email": user.email, "password": PASSWORD},
                          follow_redirects=False).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(log_in, users))
    assert statuses == [303] * 8
