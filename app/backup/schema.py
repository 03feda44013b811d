"""What the backup covers: every table of app.models in foreign-key order, and the schema revision."""

from __future__ import annotations

import warnings

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.backup.format import BackupError
from app.db import Base
from app.settings import ROOT

ALEMBIC_TABLE = "alembic_version"


def tables() -> list[Table]:
    """Parents before children, so inserting in this order satisfies every foreign key; new
    tables are included by being declared in app.models. Two tables pointing at each other have
    no such order (SQLAlchemy only warns and breaks the cycle): refused here rather than failing
    half way through a restore, unless one of the two keys is declared use_alter (see
    `later_references`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SAWarning)
        try:
            return list(Base.metadata.sorted_tables)
        except SAWarning as exc:
            raise BackupError(
                f"the tables have a foreign-key cycle, which a restore cannot insert in order: "
                f"{exc}; teach app/backup how to restore it (as it does for self-references)"
            ) from None


def later_references(table: Table) -> list[str]:
    """Columns restored in a second pass, once every table is filled: those pointing into their own
    table (model_versions.parent_id: a parent is not guaranteed a smaller id than its child) and
    those whose foreign key is declared use_alter, the one edge that breaks a cycle
    (ranking_tasks.demonstration_id; demonstrations.task_id points back)."""
    return sorted({fk.parent.name for fk in table.foreign_keys if fk.column.table is table or fk.use_alter})


def _alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates %
    return cfg


def code_head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("migrations/ has no revision: the code has no schema to back up or restore")
    return head


def upgrade_head(url: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


def db_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def check_known_tables(conn: Connection) -> None:
    """A table in the database that app.models does not declare would be silently left out."""
    known = {t.name for t in tables()} | {ALEMBIC_TABLE}
    unknown = sorted(set(inspect(conn).get_table_names()) - known)
    if unknown:
        raise BackupError(
            f"the database has tables that app.models does not declare: {', '.join(unknown)}; "
            "a backup would leave them out. Declare them in app/models or drop them first"
        )
