"""Backup refusals: a corrupt, foreign or dangerous archive, or a target that is not empty, gets a
clear message and nothing is written."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app.backup import schema
from app.backup.dump import export_all
from app.backup.format import BackupError, RowCodec
from app.backup.restore import import_all
from app.db import make_engine
from app.settings import Settings
from tests.backup.helpers import counts
from tests.factories import make_user


def rewrite_archive(
    source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], *, fix_checksums: bool = False
) -> Path:
    """A copy of the archive with members changed by `edit` (None drops one); optionally with the
    manifest's checksums recomputed, as a careful forger would."""
    import hashlib

    digests = {}
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old:
            data = edit(member.name, old.extractfile(member).read())
            if data is None:
                continue
            if member.name == "manifest.json" and fix_checksums:
                manifest = json.loads(data)
                manifest["files"].update(digests)
                data = json.dumps(manifest).encode()
            digests[member.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    return target


def assert_nothing_restored(target: Settings) -> None:
    assert not any(counts(target.sqlalchemy_url).values())
    assert not target.artifacts_dir.exists() or not any(target.artifacts_dir.iterdir())
    assert not (target.data_dir / "secret_key").exists()
    assert not list(target.data_dir.glob(".restore-tmp-*"))  # the staging folder is gone too


def test_a_corrupted_archive_is_refused_before_anything_is_written(small_archive, target, tmp_path):
    archive, _ = small_archive
    flipped = rewrite_archive(
        archive,
        tmp_path / "flipped.tar",
        lambda name, data: data.replace(b"project", b"prOject") if name == "tables/projects.jsonl" else data,
    )
    with pytest.raises(BackupError, match=r"checksum mismatch for tables/projects\.jsonl .* Nothing was restored"):
        import_all(target, flipped)
    assert_nothing_restored(target)

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match=r"cannot be read as a tar archive|has no manifest\.json"):
        import_all(target, truncated)
    dropped = rewrite_archive(
        archive,
        tmp_path / "dropped.tar",
        lambda name, data: None if name.endswith("adapter_model.safetensors") else data,
    )
    with pytest.raises(BackupError, match=r"lacks artifacts/project-1/round-0/policy/adapter/adapter_model"):
        import_all(target, dropped)
    assert_nothing_restored(target)


def test_a_target_with_data_is_refused(small_archive, target):
    archive, _ = small_archive
    schema.upgrade_head(target.sqlalchemy_url)
    engine = make_engine(target.sqlalchemy_url)
    with Session(engine) as db:
        make_user(db, email="already@example.com")
    engine.dispose()
    with pytest.raises(BackupError, match=r"already holds data \(users: 1\).*empty database"):
        import_all(target, archive)
    assert counts(target.sqlalchemy_url)["users"] == 1 and not target.artifacts_dir.exists()


def test_existing_artifact_folders_are_never_overwritten(small_archive, target):
    archive, _ = small_archive
    kept = target.artifacts_dir / "project-1" / "round-0" / "policy"
    kept.mkdir(parents=True)
    (kept / "mine.txt").write_text("keep me")
    with pytest.raises(BackupError, match=r"already has project-1/round-0/policy; import-all never overwrites"):
        import_all(target, archive)
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]
    assert not any(counts(target.sqlalchemy_url).values())


def test_an_archive_from_another_migration_is_refused(small_archive, target, tmp_path):
    archive, _ = small_archive

    def older(name: str, data: bytes) -> bytes:
        return json.dumps(json.loads(data) | {"alembic_revision": "0002"}).encode() if name == "manifest.json" else data

    with pytest.raises(BackupError, match=rf"made at migration 0002 .* migrations end at {schema.code_head()}"):
        import_all(target, rewrite_archive(archive, tmp_path / "older.tar", older))
    assert_nothing_restored(target)


def test_a_row_the_database_refuses_rolls_back_every_table(small_archive, target, tmp_path):
    """Checksums made to match: the foreign-key violation in project_members (after users and
    projects are inserted) aborts the one transaction, so no table keeps a row."""
    archive, _ = small_archive

    def dangling(name: str, data: bytes) -> bytes:
        if name != "tables/project_members.jsonl":
            return data
        row = json.loads(data)
        return (json.dumps(row | {"user_id": 999}) + "\n").encode()

    forged = rewrite_archive(archive, tmp_path / "forged.tar", dangling, fix_checksums=True)
    with pytest.raises(BackupError, match=r"project_members: the database refused the archive's rows"):
        import_all(target, forged)
    assert_nothing_restored(target)


def test_a_member_leading_outside_is_refused(small_archive, target, tmp_path):
    archive, _ = small_archive
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(BackupError, match=r"unexpected entry '\.\./escaped\.txt'"):
        import_all(target, evil)
    assert not (target.data_dir.parent / "escaped.txt").exists()
    assert_nothing_restored(target)


def test_export_refuses_what_it_cannot_write_faithfully(small_archive, tmp_path):
    archive, settings = small_archive
    with pytest.raises(BackupError, match="already exists; choose a new name"):
        export_all(settings, archive)
    with pytest.raises(BackupError, match=r"must end in \.tar, \.tar\.gz or \.tgz"):
        export_all(settings, tmp_path / "backup.zip")
    engine = make_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    with pytest.raises(BackupError, match="tables that app.models does not declare: stray"):
        export_all(settings, tmp_path / "stray.tar")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE stray"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    engine.dispose()
    with pytest.raises(BackupError, match=r"at migration 0002 .* run `ranklab migrate` first"):
        export_all(settings, tmp_path / "old.tar")
    assert sorted(
        p.name for p in tmp_path.iterdir() if p.name.endswith(".tar") or ".tmp-" in p.name or ".rows-" in p.name
    ) == ["small.tar"]  # no partial archive left behind


def test_a_column_type_without_a_codec_stops_the_export():
    gadgets = Table("gadgets", MetaData(), Column("id", Integer, primary_key=True), Column("tags", ARRAY(Integer)))
    with pytest.raises(BackupError, match=r"gadgets\.tags has the column type .* app/backup/format\.py"):
        RowCodec(gadgets)
