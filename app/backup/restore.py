"""`ranklab import-all`: an archive into an empty database and data dir, all or nothing.

Order matters, so that a refusal leaves everything as it was:
 1. unpack into a staging folder inside the data dir and verify every checksum (archive.py);
 2. refuse an archive made at another migration, a target that holds rows, and artifact
    folders that already exist;
 3. migrate the target to head, then, in ONE transaction: insert every table in foreign-key
    order in batches keeping the primary keys, set Postgres' sequences past them, compare row
    counts, and rename the artifact folders into place (same file system: atomic);
 4. commit; if the commit fails the renamed folders are removed again.
Stored absolute artifact paths under the source's artifacts folder are rewritten to this one."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import JSON, Integer, Table, bindparam, func, insert, inspect, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from app.backup import archive, schema
from app.backup.dump import NoProgress, Progress, tar_mode
from app.backup.format import ARTIFACTS_DIR, SECRET_KEY, BackupError, RowCodec, table_member
from app.db import make_engine
from app.settings import Settings

BATCH_ROWS = 1000
# SQL NULL, not the JSON value null, for a None in a nullable JSON column (prompts.messages):
# the app writes SQL NULL there, and `IS NULL` must keep meaning the same after a restore.
JSON_NONE_AS_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def import_all(settings: Settings, archive_path: Path, *, progress: Progress = NoProgress) -> dict[str, Any]:
    """Restores the archive; returns {"tables": {name: rows}, "artifact_files", "paths_rewritten", "notes"}."""
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise BackupError(f"{archive_path}: no such file")
    tar_mode(archive_path, write=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=settings.data_dir, prefix=".restore-tmp-"))
    try:
        digests = archive.unpack(archive_path, staging)
        manifest = archive.load_manifest(staging, digests)
        archive.verify(manifest, digests)
        head = schema.code_head()
        if manifest["alembic_revision"] != head:
            raise BackupError(
                f"the archive was made at migration {manifest['alembic_revision']} (ranklab "
                f"{manifest['ranklab_version']}), but this ranklab's migrations end at {head}. Restore "
                "it with the ranklab version that made it, run `ranklab migrate` there and export "
                "again. Nothing was restored"
            )
        engine = make_engine(settings.sqlalchemy_url)
        try:
            with engine.connect() as conn:
                _refuse_non_empty(conn)
            _refuse_existing_artifacts(manifest, settings)
            schema.upgrade_head(settings.sqlalchemy_url)
            report = _restore(engine, manifest, staging, settings, progress)
        finally:
            engine.dispose()
        report["notes"] += _restore_secret_key(manifest, staging, settings)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_non_empty(conn: Connection) -> None:
    present = set(inspect(conn).get_table_names())
    counts = {t.name: conn.scalar(select(func.count()).select_from(t)) for t in schema.tables() if t.name in present}
    filled = {name: n for name, n in counts.items() if n}
    if filled:
        listed = ", ".join(f"{name}: {n}" for name, n in list(filled.items())[:6])
        raise BackupError(
            f"the target database already holds data ({listed}); import-all restores only into an "
            "empty database. Point RANKLAB_DATABASE_URL at a new database. Nothing was restored"
        )


def _refuse_existing_artifacts(manifest: dict[str, Any], settings: Settings) -> None:
    clashes = [r for r in manifest["artifact_roots"] if (settings.artifacts_dir / r).exists()]
    if clashes:
        raise BackupError(
            f"{settings.artifacts_dir} already has {', '.join(clashes[:3])}; import-all never "
            "overwrites artifacts. Use an empty RANKLAB_DATA_DIR. Nothing was restored"
        )


def _restore(engine, manifest: dict[str, Any], staging: Path, settings: Settings, progress: Progress) -> dict[str, Any]:
    rewrite = _path_rewriter(manifest, settings)
    moved: list[Path] = []
    with engine.connect() as conn:
        # SQLite: the write lock from BEGIN on, so nobody slips rows in between check and insert.
        conn.execution_options(sqlite_begin="IMMEDIATE")
        try:
            with conn.begin():
                if schema.db_revision(conn) != schema.code_head():
                    raise BackupError("the target database did not reach the latest migration; run `ranklab migrate`")
                _refuse_non_empty(conn)
                tables = {}
                second_pass: list[Callable[[], None]] = []
                for table in schema.tables():
                    rows = manifest["tables"][table.name]["rows"]
                    bar = progress(total=rows, desc=table.name, unit="rows")
                    try:
                        tables[table.name] = _insert_table(
                            conn, table, staging / table_member(table.name), rows, rewrite, bar, second_pass
                        )
                    except DBAPIError as exc:
                        raise _refused(table, exc) from exc
                    finally:
                        bar.close()
                for fill in second_pass:  # references that had to wait for every table (schema.later_references)
                    fill()
                if conn.dialect.name == "postgresql":
                    _fix_sequences(conn)
                for relative in manifest["artifact_roots"]:
                    target = settings.artifacts_dir / relative
                    _move_into_place(staging / ARTIFACTS_DIR / relative, target)
                    moved.append(target)
        except BaseException:
            for target in moved:  # the transaction rolled back: take the files back out too
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            raise
    files = [m for m in manifest["files"] if m.startswith(ARTIFACTS_DIR + "/")]
    return {"tables": tables, "artifact_files": len(files), "paths_rewritten": rewrite.count, "notes": []}


def _read_rows(codec: RowCodec, path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            yield codec.decode(line, where=f"{table_member(codec.table.name)} line {number}")


def _refused(table: Table, exc: DBAPIError) -> BackupError:
    return BackupError(
        f"{table.name}: the database refused the archive's rows ({str(exc.orig).splitlines()[0]}); nothing was restored"
    )


def _insert_table(
    conn: Connection, table: Table, path: Path, expected: int, rewrite, bar, second_pass: list[Callable[[], None]]
) -> int:
    """Inserts the table's rows with its later references (schema.later_references) empty, and
    appends to `second_pass` what fills them in once every table is restored."""
    codec = RowCodec(table)
    # Bind names differ from column names (SQLAlchemy reserves those) and carry the restore types.
    names = {c.name: f"v_{c.name}" for c in table.columns}
    statement = insert(table).values({c.name: bindparam(names[c.name], type_=_bind_type(c)) for c in table.columns})
    later = schema.later_references(table)
    pk = [c.name for c in table.primary_key.columns]
    deferred: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    count = 0
    for row in _read_rows(codec, path):
        if table.name == "model_versions":  # the one table holding file paths (of artifact folders)
            row["artifact_path"] = rewrite(row["artifact_path"])
        if later and any(row[c] is not None for c in later):
            deferred.append({**{f"k_{c}": row[c] for c in pk}, **{f"s_{c}": row[c] for c in later}})
            row.update({c: None for c in later})
        batch.append({names[k]: v for k, v in row.items()})
        count += 1
        if len(batch) == BATCH_ROWS:
            conn.execute(statement, batch)
            bar.update(len(batch))
            batch = []
    if batch:
        conn.execute(statement, batch)
        bar.update(len(batch))
    if deferred:
        statement_later = (
            update(table)
            .where(*(table.c[c] == bindparam(f"k_{c}") for c in pk))
            .values({c: bindparam(f"s_{c}") for c in later})
        )

        def fill() -> None:
            try:
                conn.execute(statement_later, deferred)
            except DBAPIError as exc:
                raise _refused(table, exc) from exc

        second_pass.append(fill)
    stored = conn.scalar(select(func.count()).select_from(table))
    if count != expected or stored != expected:
        raise BackupError(
            f"{table.name}: the manifest says {expected} rows, the archive had {count} and "
            f"{stored} were stored; nothing was restored"
        )
    return count


def _bind_type(column):
    if isinstance(column.type, JSON) and column.nullable:
        return JSON_NONE_AS_NULL
    return column.type


def _fix_sequences(conn: Connection) -> None:
    """Rows came with their ids, which does not advance a serial's sequence: set each one past the
    largest id, or the next insert would collide with a restored row."""
    quote = conn.dialect.identifier_preparer.quote
    for table in schema.tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer):
            continue
        sequence = conn.scalar(
            text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table.name, "column": pk[0].name}
        )
        if sequence:
            conn.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE((SELECT MAX({quote(pk[0].name)}) "
                    f"FROM {quote(table.name)}), 0) + 1, false)"
                ),
                {"sequence": sequence},
            )


class _PathRewriter:
    """Absolute artifact paths under the source's artifacts folder -> the same place under ours.
    Relative paths (read against artifacts_dir) and paths elsewhere (a hub id) are kept."""

    def __init__(self, sources: list[str], target: Path) -> None:
        self.sources, self.target, self.count = [PurePath(s) for s in sources], target, 0

    def __call__(self, stored: str | None) -> str | None:
        if not stored or not PurePath(stored).is_absolute():
            return stored
        for source in self.sources:
            if PurePath(stored).is_relative_to(source):
                new = str(self.target / PurePath(stored).relative_to(source))
                self.count += new != stored
                return new
        return stored


def _path_rewriter(manifest: dict[str, Any], settings: Settings) -> _PathRewriter:
    source = manifest["source"]
    sources = [source["artifacts_dir"], source.get("artifacts_dir_resolved")]
    # Written as the worker writes them (worker/loop/runtime.round_dir): settings.artifacts_dir.
    return _PathRewriter([s for s in sources if s], settings.artifacts_dir.absolute())


def _move_into_place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise BackupError(f"{target} appeared during the restore; nothing was restored")
    if not source.exists():  # an artifact folder that held no files
        target.mkdir()
        return
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Another file system: copy next to the target under a temp name, then rename (still atomic).
        temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, temp)
        os.rename(temp, target)


def _restore_secret_key(manifest: dict[str, Any], staging: Path, settings: Settings) -> list[str]:
    if not manifest["secret_key"]:
        return []
    if settings.secret_key:
        return [
            "RANKLAB_SECRET_KEY is set, so the archive's signing key was not used: labeler pseudonyms "
            "in exports follow the configured key"
        ]
    archived = (staging / SECRET_KEY).read_text().strip()
    target = settings.data_dir / SECRET_KEY
    if target.exists():
        if target.read_text().strip() == archived:
            return []
        return [
            f"{target} already existed and was kept; labeler pseudonyms in exports will differ from the "
            f"source's unless you replace it with the archive's {SECRET_KEY}"
        ]
    temp = target.with_name(f".{SECRET_KEY}.tmp-{uuid.uuid4().hex[:8]}")
    temp.write_text(archived)
    temp.chmod(0o600)
    os.rename(temp, target)
    return []
