"""`ranklab export-all`: every table, the model artifacts and the signing key into one archive.

All tables are read inside one transaction (REPEATABLE READ on Postgres, one read transaction
on SQLite's WAL), so the archive is a consistent snapshot even while the app keeps writing.
Rows are streamed (yield_per) into one scratch JSONL file per table, which goes into the tar and
is deleted before the next table: memory stays flat and the extra disk is one table's worth.
The archive is written under a temporary name and renamed at the end: a failed export never
leaves a half archive that looks finished."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from app.backup import schema
from app.backup.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    SECRET_KEY,
    BackupError,
    RowCodec,
    artifact_member,
    ranklab_version,
    table_member,
)
from app.db import make_engine
from app.models import ModelVersion, utcnow
from app.settings import Settings

Progress = Callable[..., Any]
"""tqdm-like: progress(total=, desc=, unit=, ...) -> an object with update(n) and close()."""

BATCH_ROWS = 1000


class NoProgress:
    def __init__(self, **_kw) -> None:
        pass

    def update(self, _n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def tar_mode(path: Path, *, write: bool) -> Literal["w:gz", "r:gz", "w", "r:*"]:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz" if write else "r:gz"
    if name.endswith(".tar"):
        return "w" if write else "r:*"
    raise BackupError(f"{path}: the archive name must end in .tar, .tar.gz or .tgz")


class _HashingReader:
    """Hands tarfile the file's bytes while hashing them, so each file is read once."""

    def __init__(self, source: BinaryIO) -> None:
        import hashlib

        self._source, self.digest, self.size = source, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def _add_file(tar: tarfile.TarFile, path: Path, member: str, files: dict[str, dict]) -> int:
    with path.open("rb") as f:
        stat = os.fstat(f.fileno())
        info = tarfile.TarInfo(member)
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        reader = _HashingReader(f)
        tar.addfile(info, reader)
    files[member] = {"sha256": reader.digest.hexdigest(), "bytes": reader.size}
    return reader.size


def _add_bytes(tar: tarfile.TarFile, data: bytes, member: str) -> None:
    info = tarfile.TarInfo(member)
    info.size, info.mtime, info.mode = len(data), int(utcnow().timestamp()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _dump_table(conn: Connection, codec: RowCodec, scratch: Path, progress: Progress) -> tuple[Path, int]:
    table = codec.table
    total = conn.scalar(select(func.count()).select_from(table))
    path = scratch / f"{table.name}.jsonl"
    rows = 0
    bar = progress(total=total, desc=table.name, unit="rows")
    try:
        result = conn.execute(
            select(table).order_by(*table.primary_key.columns), execution_options={"yield_per": BATCH_ROWS}
        )
        with path.open("w", encoding="utf-8", newline="\n") as f:
            for batch in result.partitions():
                f.writelines(codec.encode(row) + "\n" for row in batch)
                rows += len(batch)
                bar.update(len(batch))
    finally:
        bar.close()
    return path, rows


def artifact_roots(conn: Connection, artifacts_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(folders under artifacts_dir to archive, relative to it; model versions whose artifact is
    not archived, and why). Paths are resolved as app/rounds/downloads.py does: relative ones
    against artifacts_dir, symlinks and `..` followed."""
    root = artifacts_dir.resolve()
    found: set[Path] = set()
    skipped = []
    rows = conn.execute(
        select(ModelVersion.id, ModelVersion.artifact_path)
        .where(ModelVersion.artifact_path.is_not(None))
        .order_by(ModelVersion.id)
    )
    for version_id, stored in rows:
        if stored is None:  # excluded by the query; this narrows the type
            continue
        path = (root / stored).resolve()
        if not path.is_relative_to(root) or path == root:
            skipped.append(
                {
                    "model_version_id": version_id,
                    "artifact_path": stored,
                    "why": "outside the artifacts folder (a hub id or a folder elsewhere); not archived",
                }
            )
        elif not path.exists():
            skipped.append(
                {
                    "model_version_id": version_id,
                    "artifact_path": stored,
                    "why": "nothing stored there (a hub id, or a deleted folder)",
                }
            )
        else:
            found.add(path)
    # A folder inside another archived folder is already in the archive.
    kept = [p for p in sorted(found) if not any(p != q and p.is_relative_to(q) for q in found)]
    return [p.relative_to(root).as_posix() for p in kept], skipped


def _artifact_files(root: Path, relative: str) -> list[Path]:
    path = root / relative
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    # A symlink leading out of the artifacts folder is not ours to copy (same rule as downloads).
    return [p for p in candidates if p.resolve().is_relative_to(root)]


def export_all(settings: Settings, out: Path, *, progress: Progress = NoProgress) -> dict[str, Any]:
    """Writes the archive to `out` (.tar, .tar.gz or .tgz) and returns its manifest."""
    out = Path(out)
    mode = tar_mode(out, write=True)
    if out.exists():
        raise BackupError(f"{out} already exists; choose a new name (a backup is never overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with (
            tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.rows-") as scratch,
            tarfile.open(partial, mode, format=tarfile.PAX_FORMAT) as tar,
            engine.connect() as conn,
        ):
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for every table
            with conn.begin():
                manifest = _write_archive(conn, tar, Path(scratch), settings, progress)
            _add_bytes(tar, json.dumps(manifest, indent=1).encode(), MANIFEST)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    return manifest


def _write_archive(
    conn: Connection, tar: tarfile.TarFile, scratch: Path, settings: Settings, progress: Progress
) -> dict[str, Any]:
    revision, head = schema.db_revision(conn), schema.code_head()
    if revision != head:
        raise BackupError(
            f"the database is at migration {revision or 'none (not migrated)'} but this ranklab's "
            f"migrations end at {head}; run `ranklab migrate` first, then export"
        )
    schema.check_known_tables(conn)
    codecs = [RowCodec(table) for table in schema.tables()]  # an unknown column type fails before any write
    files: dict[str, dict] = {}
    tables: dict[str, dict] = {}
    for codec in codecs:
        path, rows = _dump_table(conn, codec, scratch, progress)
        _add_file(tar, path, table_member(codec.table.name), files)
        path.unlink()
        tables[codec.table.name] = {"rows": rows, "columns": codec.columns}

    root = settings.artifacts_dir.resolve()
    roots, not_archived = artifact_roots(conn, settings.artifacts_dir)
    artifact_files = [
        (p, artifact_member(p.relative_to(root).as_posix())) for r in roots for p in _artifact_files(root, r)
    ]
    bar = progress(total=sum(p.stat().st_size for p, _ in artifact_files), desc="artifacts", unit="B", unit_scale=True)
    try:
        for path, member in artifact_files:
            bar.update(_add_file(tar, path, member, files))
    finally:
        bar.close()

    # Without the generated signing key, exports' labeler pseudonyms change after a restore. A key
    # set in the environment (RANKLAB_SECRET_KEY) is configuration, not data: not archived.
    key_file = settings.data_dir / SECRET_KEY
    secret_key = not settings.secret_key and key_file.is_file()
    if secret_key:
        _add_file(tar, key_file, SECRET_KEY, files)

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ranklab_version": ranklab_version(),
        "alembic_revision": revision,
        "created_at": utcnow().isoformat(),
        "source": {
            "dialect": conn.dialect.name,
            "artifacts_dir": str(settings.artifacts_dir.absolute()),
            "artifacts_dir_resolved": str(root),
        },
        "tables": tables,
        "artifact_roots": roots,
        "not_archived": not_archived,
        "secret_key": secret_key,
        "files": files,
    }
