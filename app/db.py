"""Engine, session factory and the declarative Base shared by the web app and the worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import ClassVar

from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.settings import get_settings

# Stable constraint names so Alembic can alter them on SQLite and Postgres alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Fail fast when PostgreSQL is down or unreachable (app/unavailable.py turns it into a 503):
# libpq waits forever to connect by default, and a peer that vanished without closing the socket
# (host down, network cut) is only noticed by TCP keepalives, after ~2 h with the OS defaults.
CONNECT_TIMEOUT_SECONDS = 5
TCP_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
POOL_TIMEOUT_SECONDS = 10
# Connections a process keeps, and the most it opens: as many as the requests it runs at once
# (anyio's default threadpool, 40 threads). A smaller pool with overflow closed each connection
# above its size when it was handed back, so a busy web process opened a new Postgres backend
# (a fork) for most requests (docs/labeling-performance.md, "A third pass", step 3).
POOL_SIZE = 40
PING_AFTER_IDLE_SECONDS = 10.0


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every model maps a plain Table (SQLAlchemy types it as the wider FromClause), so
    # Model.__table__ can go to insert()/update() as a typed Core table.
    __table__: ClassVar[Table]


def make_engine(url: str, *, ping: str = "always", **engine_kw) -> Engine:
    """`ping`: when a pooled Postgres connection is checked with a round trip before use, "always"
    (pool_pre_ping: the worker, the CLI) or "after_idle" (the web app, see _ping_after_idle)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **engine_kw)
        _configure_sqlite(engine)
        return engine
    pooled = "poolclass" not in engine_kw
    if pooled:
        # pool_timeout bounds the wait for a free connection, so an overloaded or restarting
        # database gives a 503, not a hang.
        engine_kw.update(
            pool_size=POOL_SIZE, max_overflow=0, pool_timeout=POOL_TIMEOUT_SECONDS, pool_pre_ping=ping == "always"
        )
    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **TCP_KEEPALIVES} if url.startswith("postgresql") else {}
    )
    engine = create_engine(url, connect_args=connect_args, **engine_kw)
    if pooled and ping == "after_idle":
        _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine) -> None:
    """Check a pooled connection with a round trip before use, if it sat idle for PING_AFTER_IDLE_SECONDS.

    What pool_pre_ping does on every checkout, except on the connections a busy server keeps
    using: there the ping was a round trip per request, a measurable share of the labeling
    loop's CPU (docs/labeling-performance.md, "A second pass", step 3). A connection a restarted
    server ended while in use fails its statement instead; the request answers 503 and SQLAlchemy
    invalidates every older pooled connection at once (app/unavailable.py), so the next requests
    get fresh ones."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(
                f"pooled connection idle for {time.monotonic() - idle_since:.0f} s is gone"
            ) from exc


def _configure_sqlite(engine: Engine) -> None:
    """WAL + foreign keys, and explicit BEGIN so a transaction can ask for the write lock up front.

    pysqlite's own transaction handling defers BEGIN; we take it over so that
    `session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})` makes a
    read-then-write (the task handout) atomic across threads and processes.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def write_lock_at_begin(engine: Engine) -> Engine:
    """The same engine and pool, but every SQLite transaction begins IMMEDIATE (takes the write lock).

    For requests that may write: in WAL mode a transaction that began by reading cannot take the
    write lock once another connection (a worker's heartbeat, another request) has committed
    meanwhile; SQLite then fails at once with "database is locked", whatever the busy timeout."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def is_sqlite(session_or_engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "sqlite"


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().sqlalchemy_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work outside a request (CLI, worker task): commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def start_write_transaction(db: Session) -> None:
    """Makes the coming read-then-write atomic.

    Postgres: nothing to do here, row locks do it. SQLite: the write lock must be taken by the
    transaction's own BEGIN (IMMEDIATE). A transaction that began DEFERRED and only read (e.g. this
    request's login lookup) cannot take it later in WAL mode once another writer has committed, so
    such a transaction is committed first. Call this before anything you need to keep atomic.
    """
    if not is_sqlite(db):
        return
    if db.in_transaction():
        if db.connection().get_execution_options().get("sqlite_begin") == "IMMEDIATE":
            return  # this transaction already holds the write lock
        db.commit()
    conn = db.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
    if conn.get_execution_options().get("sqlite_begin") != "IMMEDIATE":  # pragma: no cover - a wiring bug
        raise RuntimeError("SQLite write lock was not taken at BEGIN; the handout would not be atomic")
