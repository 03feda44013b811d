"""Small helpers shared by the admin page tests."""

import re

from app.models import Role
from tests.factories import csrf_of, login, make_user


def admin_client(client, db):
    """Logs `client` in as a new admin; returns (admin, csrf token)."""
    admin = make_user(db, role=Role.admin)
    login(client, admin)
    return admin, csrf_of(client, db)


def fresh(db):
    """Ends the test session's read snapshot and forgets loaded rows, to see what the app committed."""
    db.rollback()
    db.expire_all()


def shown_secret(html: str) -> str:
    """The once-shown password or token on a page."""
    match = re.search(r"data-secret>([^<]+)</code>", html)
    assert match, "no secret shown"
    return match.group(1)
