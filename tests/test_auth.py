"""Login, sessions and passwords over HTTP, on SQLite and Postgres. API token scopes and every
route's access rules are in tests/security/; the admin token pages in tests/admin/test_people.py."""

from datetime import timedelta

from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.auth import service as auth_service
from app.auth.security import password_needs_rehash, token_digest, verify_password
from app.models import ApiToken, LoginAttempt, Role, User, WebSession, utcnow
from tests.factories import PASSWORD, csrf_of, make_token, make_user


def _login(client, user, password=PASSWORD, **form):
    return client.post("/login", data={"email": user.email, "password": password, **form}, follow_redirects=False)


def test_login_sets_httponly_session_and_logout_invalidates_it(client, db):
    user = make_user(db, role=Role.admin)
    response = _login(client, user)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain http, setting off: a Secure cookie would never come back
    old_token = client.cookies.get("ranklab_session")

    assert client.get("/login", follow_redirects=False).status_code == 303  # already logged in

    response = client.post("/logout", data={"csrf_token": csrf_of(client, db)}, follow_redirects=False)
    assert response.status_code == 303
    cleared = response.headers["set-cookie"].lower()
    assert 'ranklab_session=""' in cleared and "max-age=0" in cleared
    db.rollback()
    assert db.scalar(select(WebSession).where(WebSession.token_hash == token_digest(old_token))) is None
    client.cookies.set("ranklab_session", old_token)  # a copy of the cookie kept by someone
    assert client.get("/login", follow_redirects=False).status_code == 200
    response = client.get("/admin", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/admin"


def test_cookie_is_secure_over_https_or_when_set(app, db, settings):
    user = make_user(db)
    with TestClient(app, base_url="https://testserver") as https:
        assert "secure" in _login(https, user).headers["set-cookie"].lower().split("; ")
    # Behind a proxy that terminates TLS: uvicorn (proxy_headers=True) trusts X-Forwarded-Proto
    # only from FORWARDED_ALLOW_IPS; anyone else claiming https changes nothing.
    with TestClient(ProxyHeadersMiddleware(app, trusted_hosts="testclient")) as behind_proxy:
        response = behind_proxy.post(
            "/login",
            data={"email": user.email, "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
        assert "secure" in response.headers["set-cookie"].lower().split("; ")
    with TestClient(ProxyHeadersMiddleware(app, trusted_hosts="10.9.9.9")) as spoofed:
        response = spoofed.post(
            "/login",
            data={"email": user.email, "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
            follow_redirects=False,
        )
        assert response.status_code == 303 and "secure" not in response.headers["set-cookie"].lower()
    settings.secure_cookies = True
    with TestClient(app) as http:
        assert "secure" in _login(http, user).headers["set-cookie"].lower().split("; ")


def test_passwords_are_stored_as_argon2id_and_old_parameters_upgraded(client, db):
    user = make_user(db)
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    # A hash made with weaker parameters (as older releases of argon2-cffi did) ...
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    db.commit()
    assert password_needs_rehash(user.password_hash)
    assert _login(client, user).status_code == 303
    db.rollback()
    db.expire_all()
    upgraded = db.get(User, user.id).password_hash
    # ... is replaced by one with today's parameters at the next login, and the password still works.
    assert not password_needs_rehash(upgraded) and verify_password(upgraded, PASSWORD)


def test_wrong_password_is_refused_and_logout_needs_csrf(client, db):
    user = make_user(db)
    response = client.post("/login", data={"email": user.email, "password": "nope"})
    assert response.status_code == 401 and "Wrong email or password" in response.text
    assert _login(client, user).status_code == 303
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200  # still logged in


def test_unknown_or_deactivated_accounts_get_the_same_answer(client, db):
    inactive = make_user(db)
    inactive.is_active = False
    db.commit()
    unknown = client.post("/login", data={"email": "nobody@example.com", "password": PASSWORD})
    deactivated = client.post("/login", data={"email": inactive.email, "password": PASSWORD})
    for response in (unknown, deactivated):
        assert response.status_code == 401 and "Wrong email or password" in response.text
        assert "ranklab_session" not in response.cookies


def _age_failures(db, minutes: int) -> None:
    for attempt in db.scalars(select(LoginAttempt)):
        attempt.at = utcnow() - timedelta(minutes=minutes)
    db.commit()


def test_login_is_rate_limited_and_says_when_to_retry(client, db):
    user = make_user(db)
    for _ in range(auth_service.MAX_FAILED_LOGINS):
        assert _login(client, user, "nope").status_code == 401
    _age_failures(db, minutes=0)  # all just now, however slow the loop above was
    response = _login(client, user)  # even the right password, while limited
    assert response.status_code == 429
    assert "Too many failed logins. Try again in 15 minutes." in response.text
    assert 840 < int(response.headers["Retry-After"]) <= 900

    _age_failures(db, minutes=10)  # the failures were 10 minutes ago: 5 minutes left
    response = _login(client, user)
    assert response.status_code == 429 and "Try again in 5 minutes." in response.text
    assert 240 < int(response.headers["Retry-After"]) <= 300

    _age_failures(db, minutes=16)  # out of the window
    assert _login(client, user).status_code == 303
    db.rollback()
    assert db.scalar(select(LoginAttempt)) is None  # a good login clears the email's failures


def test_login_rate_limit_counts_per_client_address_across_emails(client, db):
    user = make_user(db)
    for n in range(auth_service.MAX_FAILED_LOGINS):
        assert client.post("/login", data={"email": f"guess{n}@example.com", "password": "x"}).status_code == 401
    response = _login(client, user)  # an untouched account, from the same address
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_expired_session_no_longer_works(client, db):
    user = make_user(db)
    assert _login(client, user).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 200
    session = db.scalar(select(WebSession).where(WebSession.user_id == user.id))
    session.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=/"


def test_login_redirects_only_within_the_site(app, db):
    user = make_user(db)
    cases = {
        "/admin/users": "/admin/users",
        "//evil.example": "/",
        "/\\evil.example": "/",
        "/\t/evil.example": "/",
        "https://evil.example/": "/",
        "": "/",
    }
    for target, expected in cases.items():
        with TestClient(app) as client:
            assert _login(client, user, next=target).headers["location"] == expected, target


def test_api_token_last_used_is_stamped_at_most_once_a_minute(client, db):
    plaintext = make_token(db, "export")
    row = db.scalar(select(ApiToken))
    assert row.token_hash == token_digest(plaintext) and row.last_used_at is None
    bearer = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/api/v1/projects", headers=bearer).status_code == 200
    db.rollback()
    db.expire_all()
    assert db.get(ApiToken, row.id).last_used_at is not None

    thirty_seconds_ago = utcnow() - timedelta(seconds=30)
    db.get(ApiToken, row.id).last_used_at = thirty_seconds_ago
    db.commit()
    assert client.get("/api/v1/projects", headers=bearer).status_code == 200
    db.expire_all()
    assert db.get(ApiToken, row.id).last_used_at == thirty_seconds_ago  # no write on every request

    db.get(ApiToken, row.id).last_used_at = utcnow() - timedelta(minutes=2)
    db.commit()
    assert client.get("/api/v1/projects", headers=bearer).status_code == 200
    db.expire_all()
    assert db.get(ApiToken, row.id).last_used_at > thirty_seconds_ago


def test_concurrent_logins_all_succeed(app, db):
    """Logins read then write; on SQLite they must not fail with 'database is locked'."""
    from concurrent.futures import ThreadPoolExecutor

    users = [make_user(db) for _ in range(8)]

    def log_in(user):
        with TestClient(app) as c:
            return c.post(
                "/login", data={"email": user.email, "password": PASSWORD}, follow_redirects=False
            ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(log_in, users))
    assert statuses == [303] * 8
