"""API tokens as ready-made Authorization headers."""

import pytest

from tests.factories import make_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def upload_auth(db) -> dict[str, str]:
    return bearer(make_token(db, "upload"))


@pytest.fixture
def export_auth(db) -> dict[str, str]:
    return bearer(make_token(db, "export"))


@pytest.fixture
def admin_auth(db) -> dict[str, str]:
    return bearer(make_token(db, "admin"))
