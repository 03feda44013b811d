"""The backup archive: its layout, the manifest, and how each column type becomes JSON and back.

An archive is a tar (optionally gzip-compressed) holding
  tables/<table>.jsonl   one JSON object per row, keys = column names, in primary-key order
  artifacts/<path>       files of the model-version folders under settings.artifacts_dir
  secret_key             the generated signing key of the data dir, when there is one
  manifest.json          written last: versions, row counts, and the sha256 of every other member

Values are encoded by the *column's* type, never guessed from the value, so a JSON column holding
a string that looks like a date comes back as that string. A column type this file does not know
stops the export with an error naming the table and column: a new type must be taught here, not
silently written as its repr."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import PurePosixPath
from typing import IO, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Time,
    Uuid,
)
from sqlalchemy.types import TypeDecorator

FORMAT = "ranklab-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES_DIR = "tables"
ARTIFACTS_DIR = "artifacts"
SECRET_KEY = "secret_key"
CHUNK_BYTES = 1024 * 1024


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what is wrong and what to do."""


def table_member(name: str) -> str:
    return f"{TABLES_DIR}/{name}.jsonl"


def artifact_member(relative: str) -> str:
    return f"{ARTIFACTS_DIR}/{relative}"


def check_member_name(name: str) -> PurePosixPath:
    """Archive member names are data from a file: only plain relative paths in our three places."""
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or "\\" in name
        or not path.parts
        or (path.parts[0] not in (TABLES_DIR, ARTIFACTS_DIR) and name not in (MANIFEST, SECRET_KEY))
    ):
        raise BackupError(
            f"the archive holds an unexpected entry {name!r}; it was not made by "
            "`ranklab export-all` or has been tampered with"
        )
    return path


# ---- checksums --------------------------------------------------------------------------------


def copy_hashing(source: IO[bytes], target: IO[bytes]) -> tuple[str, int]:
    """Copies in chunks (never a whole file in memory) and returns (sha256, bytes)."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


# ---- column codecs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _same(value):
    return value


def _encode_datetime(value: datetime) -> str:
    # Postgres hands timestamptz back in the session's time zone; SQLite stores no offset at all.
    # UTC on the way out keeps one meaning for both directions.
    return (value.astimezone(UTC) if value.tzinfo else value).isoformat()


def _codec_for_type(sql_type) -> Codec | None:
    if isinstance(sql_type, TypeDecorator):
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, JSON):
        return Codec(_same, _same)  # already JSON values
    if isinstance(sql_type, DateTime):
        return Codec(_encode_datetime, datetime.fromisoformat)
    if isinstance(sql_type, Date):
        return Codec(date.isoformat, date.fromisoformat)
    if isinstance(sql_type, Time):
        return Codec(time.isoformat, time.fromisoformat)
    if isinstance(sql_type, Boolean):
        return Codec(bool, bool)
    if isinstance(sql_type, Integer):
        return Codec(int, int)
    if isinstance(sql_type, Float):
        return Codec(float, float)
    if isinstance(sql_type, Numeric):  # exact decimals travel as text, never through a float
        return Codec(str, Decimal)
    if isinstance(sql_type, Enum) and sql_type.enum_class is not None:
        enum_class = sql_type.enum_class
        return Codec(lambda v: v.name, lambda v: enum_class[v])
    if isinstance(sql_type, String):  # Text, Enum without a class, our StrEnum-valued columns
        return Codec(str, str)
    if isinstance(sql_type, LargeBinary):
        return Codec(lambda v: base64.b64encode(bytes(v)).decode("ascii"), base64.b64decode)
    if isinstance(sql_type, Uuid):
        return Codec(str, uuid.UUID if sql_type.as_uuid else str)
    return None


def column_codec(table: Table, column: Column) -> Codec:
    codec = _codec_for_type(column.type)
    if codec is None:
        raise BackupError(
            f"{table.name}.{column.name} has the column type {column.type!r}, which the backup "
            "format does not handle yet; teach app/backup/format.py how to write it"
        )
    return codec


class RowCodec:
    """Encodes and decodes whole rows of one table; built once per table (fails before any row)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns]
        self._codecs = {c.name: column_codec(table, c) for c in table.columns}

    def encode(self, row) -> str:
        mapping = row._mapping
        return json.dumps(
            {
                name: None if mapping[name] is None else self._codecs[name].encode(mapping[name])
                for name in self.columns
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def decode(self, line: str, *, where: str) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BackupError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or set(data) != set(self.columns):
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise BackupError(f"{where}: expected the columns {self.columns} of {self.table.name}, got {got}")
        try:
            return {name: None if value is None else self._codecs[name].decode(value) for name, value in data.items()}
        except (TypeError, ValueError, KeyError) as exc:
            raise BackupError(f"{where}: a value does not fit its column ({exc})") from None


def ranklab_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ranklab")
    except PackageNotFoundError:
        return "unknown"
