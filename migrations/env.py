"""Alembic environment: the URL comes from ranklab's Settings (or a connection passed in by tests)."""

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import pool

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.db import Base, make_engine
from app.settings import get_settings

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=get_settings().sqlalchemy_url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    # render_as_batch lets ALTERs work on SQLite (copy-and-move) as well as Postgres.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with _sqlite_foreign_keys_off(connection):
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()


@contextmanager
def _sqlite_foreign_keys_off(connection) -> Iterator[None]:
    """SQLite's batch mode copies a table and drops the old one; with foreign keys on, that drop
    fires ON DELETE SET NULL / CASCADE in the tables that point at it (migration 0002 nulled every
    completion's model version and every version's parent this way). So keys are off while the
    migrations run (the pragma is ignored inside a transaction, hence before BEGIN, on the driver's
    connection), then checked and turned back on."""
    if connection.dialect.name != "sqlite":
        yield
        return
    if connection.in_transaction():
        connection.commit()
    raw = connection.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
        broken = raw.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left rows pointing at missing rows: {broken[:5]}")
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
