"""Backup and restore: `ranklab export-all` then `ranklab import-all` gives back the same project.

A realistic project (rankings with ties and flags, leases and skips, rounds with events, model
versions with artifact folders as the worker writes them, sessions, tokens) is exported from one
backend and restored into a fresh database of each backend; every table is compared column by
column, the artifact bytes file by file, and the restored app answers the same. Postgres targets
live in their own schema of the test database, so no second database is needed."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, Table, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.backup import schema
from app.backup.dump import export_all
from app.backup.format import BackupError, RowCodec
from app.backup.restore import import_all
from app.db import make_engine
from app.main import create_app
from app.models import (Assignment, Completion, ModelVersion, Project, Prompt, RankingTask, Role, RoundPrompt, User,
                        WebSession, utcnow)
from app.settings import ROOT, Settings
from tests import services
from tests.factories import login, make_project, make_ranking, make_task, make_token, make_user
from tests.rounds.helpers import add_event, make_round, make_round_task, make_version

PG_SCHEMA = "backup_target"


# ---- fixtures ---------------------------------------------------------------------------------

def make_settings(data_dir: Path, url: str) -> Settings:
    # No secret key in the environment: the data dir's generated key, as `ranklab bootstrap` makes it.
    return Settings(data_dir=data_dir, database_url=url, secret_key="", embedded_worker=False, _env_file=None)


@pytest.fixture
def source(db_url, tmp_path) -> Settings:
    settings = make_settings(tmp_path / "source", db_url)
    settings.resolved_secret_key()
    return settings


@pytest.fixture
def source_app(source):
    application = create_app(source)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def source_db(source_app):
    with sessionmaker(bind=source_app.state.engine, expire_on_commit=False)() as session:
        yield session


@pytest.fixture
def pg_target_url() -> str:
    """An empty schema of the test database, reached through search_path (even alembic_version)."""
    url = services.postgres_url()
    if url is None:
        services.missing("PostgreSQL")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    yield make_url(url).update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"}).render_as_string(False)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    engine.dispose()


def target_settings(request, tmp_path, backend: str) -> Settings:
    url = (f"sqlite:///{tmp_path / 'target' / 'ranklab.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("pg_target_url"))
    return make_settings(tmp_path / "target", url)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> Settings:
    """A fresh, not even migrated, database and data dir: import-all migrates it."""
    return target_settings(request, tmp_path, request.param)


# ---- a realistic project ----------------------------------------------------------------------

def write_artifact(folder: Path, seed: int) -> None:
    """What worker.ml leaves behind: a config, weights (binary, > one read chunk) and a subfolder."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed, "kind": folder.name}))
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(bytes((i * seed) % 256 for i in range(70_000)) * 20)


def build_project(db: Session, settings: Settings, client: TestClient) -> dict:
    project = make_project(db, name="helpfulness ✓", overlap=2, flags=["unsafe", "too_long"],
                           guidelines="# Rank\nBest **first**.")
    admin = make_user(db, role=Role.admin)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    gone = make_user(db)
    gone.is_active = False
    token = make_token(db, "export", "admin")

    # Uploaded tasks: a strict order with a flag, a tie marked late, a chat prompt "none acceptable".
    t1 = make_task(db, project, texts=["best", "good 😀", "ok\nmultiline", 'bad "quoted"'], prompt_text="Say hi")
    a, b, c, d = t1.completion_ids
    make_ranking(db, t1, alice, [[a], [b], [c], [d]], flags={str(d): ["unsafe"]}, time_spent_ms=4200,
                 comment="d is rude")
    make_ranking(db, t1, bob, [[a, b], [c, d]], late=True, time_spent_ms=900)
    t2 = make_task(db, project, k=5)
    chat = db.get(Prompt, t2.prompt_id)
    chat.text, chat.messages = None, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Go"}]
    chat.meta, chat.split = {"source": "forum", "score": 1.5, "tags": ["a", None]}, "validation"
    ids = t2.completion_ids
    make_ranking(db, t2, alice, [[ids[4]], ids[:4]], none_acceptable=True, flags={str(ids[0]): ["too_long", "unsafe"]})
    # A live lease and a skip on a third task.
    t3 = make_task(db, project)
    db.add_all([Assignment(task_id=t3.id, user_id=bob.id, project_id=project.id, state="leased",
                           lease_expires_at=utcnow() + timedelta(minutes=30),
                           display_order=list(reversed(t3.completion_ids))),
                Assignment(task_id=t3.id, user_id=alice.id, project_id=project.id, state="skipped",
                           lease_expires_at=utcnow(), finished_at=utcnow(), skip_reason="not my language")])
    t3.slots_taken = 1
    db.commit()

    # Round 0 trained a reward model and a policy; round 1 is labeling the policy's completions.
    base = make_version(db, project, kind="base", name="hub base", artifact_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    r0 = make_round(db, project, number=0, status="done", policy_in_id=base.id, progress=0.1 + 0.2,
                    started_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), finished_at=utcnow(),
                    heartbeat_at=utcnow(), claim_token="run-1")
    folder = settings.artifacts_dir / f"project-{project.id}" / "round-0"
    write_artifact(folder / "reward", 3)
    write_artifact(folder / "policy", 7)
    write_artifact(folder / "sft", 11)
    reward = make_version(db, project, kind="reward", parent=base, training_round=r0,
                          artifact_path=str(folder / "reward"),
                          metrics={"val_accuracy": 0.7500000000000001, "steps": 2**40})
    policy = make_version(db, project, kind="policy", training_round=r0, artifact_path=str(folder / "policy"))
    # Lineage pointing at a *later* id (restored in a second pass), and a path relative to artifacts_dir.
    sft = make_version(db, project, kind="sft", parent=base, artifact_path=f"project-{project.id}/round-0/sft")
    policy.parent_id = sft.id
    r0.reward_model_id, r0.policy_out_id = reward.id, policy.id
    r0.metrics = {"reward": {"val_accuracy": 0.75}, "policy": {"kl": 0.0123456789, "score_first": -1.25}}
    db.commit()
    add_event(db, r0, kind="log", stage="training_reward", message="reward model: step 2/2 ✓")
    add_event(db, r0, kind="metric", stage="training_policy", step=3,
              data={"kl": 0.0123456789, "reward": -1.5, "nested": {"a": [1, 2.5, None]}})
    r1 = make_round(db, project, number=1, status="labeling", policy_in_id=policy.id)
    rt = make_round_task(db, project, r1, k=4)
    for i, completion in enumerate(db.scalars(select(Completion).where(Completion.prompt_id == rt.prompt_id))):
        completion.generation_params, completion.token_count = {"temperature": 0.7, "top_p": 0.95}, 10 + i
        completion.finish_reason = "eos" if i else "length"
    db.add(RoundPrompt(round_id=r1.id, prompt_id=rt.prompt_id, batch=0, generated_at=utcnow()))
    db.commit()
    w, x, y, z = rt.completion_ids
    make_ranking(db, rt, bob, [[x], [y, z], [w]])

    # A browser session and a failed login, through the app.
    login(client, alice)
    assert client.post("/login", data={"email": bob.email, "password": "wrong"}).status_code == 401
    return {"project": project.id, "token": token, "alice": alice.email, "round": r1.id, "policy": policy.id}


def api_answers(client: TestClient, built: dict) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {built['token']}"}
    base = f"/api/v1/projects/{built['project']}"
    paths = [f"{base}/exports/rankings", f"{base}/exports/consensus", f"{base}/exports/pairs?style=conversational",
             f"{base}/models", f"/api/v1/rounds/{built['round']}"]
    answers = {}
    for path in paths:
        response = client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        answers[path] = response.text
    return answers


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in primary-key order, read back through the ORM column types."""
    def norm(value):
        return value.astimezone(UTC) if isinstance(value, datetime) else value

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {table.name: [tuple(norm(v) for v in row)
                                 for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
                    for table in schema.tables()}
    finally:
        engine.dispose()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            present = set(conn.dialect.get_table_names(conn))
            return {t.name: conn.scalar(select(func.count()).select_from(t)) for t in schema.tables()
                    if t.name in present}
    finally:
        engine.dispose()


def check_restored(source: Settings, target: Settings, manifest: dict) -> None:
    """Every table column by column (artifact paths moved to the target's data dir) and every artifact byte."""
    expected, actual = snapshot(source.sqlalchemy_url), snapshot(target.sqlalchemy_url)
    assert all(expected.values()), [name for name, rows in expected.items() if not rows]  # every table is covered
    path_column = [c.name for c in ModelVersion.__table__.columns].index("artifact_path")
    old, new = str(source.artifacts_dir), str(target.artifacts_dir)
    expected["model_versions"] = [row[:path_column] + (row[path_column] and row[path_column].replace(old, new),)
                                  + row[path_column + 1:] for row in expected["model_versions"]]
    for name, rows in expected.items():
        assert actual[name] == rows, name
    assert manifest["artifact_roots"] and tree_bytes(source.artifacts_dir) == tree_bytes(target.artifacts_dir)
    assert (target.data_dir / "secret_key").read_text() == (source.data_dir / "secret_key").read_text()


# ---- the round trip ---------------------------------------------------------------------------

def test_round_trip_keeps_every_row_artifact_and_answer(source, source_app, source_db, target, tmp_path):
    with TestClient(source_app) as client:
        built = build_project(source_db, source, client)
        before = api_answers(client, built)
    archive = tmp_path / "backup.tar.gz"
    manifest = export_all(source, archive)
    assert manifest["alembic_revision"] == schema.code_head()
    assert manifest["tables"]["rankings"]["rows"] == 4 and manifest["tables"]["pairwise_comparisons"]["rows"] == 19
    assert [s["artifact_path"] for s in manifest["not_archived"]] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]

    report = import_all(target, archive)
    assert report["tables"] == {name: meta["rows"] for name, meta in manifest["tables"].items()}
    assert report["paths_rewritten"] == 2 and report["artifact_files"] == 6 and report["notes"] == []
    check_restored(source, target, manifest)
    null_messages = "SELECT count(*) FROM prompts WHERE messages IS NULL"  # SQL NULL stays SQL NULL
    for url in (source.sqlalchemy_url, target.sqlalchemy_url):
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(text(null_messages)) == 3
        engine.dispose()

    restored = create_app(target)
    try:
        with TestClient(restored) as client:
            # The same token works, the exports are the same JSONL byte for byte (same labeler
            # pseudonyms: the signing key came along); model versions point into the new data dir.
            moved = str(source.artifacts_dir), str(target.artifacts_dir)
            after = api_answers(client, built)
            for path, body in before.items():
                if "/exports/" in path:
                    assert after[path] == body, path
                else:  # JSON columns: Postgres' JSONB orders object keys its own way, so compare parsed
                    assert json.loads(after[path]) == json.loads(body.replace(*moved)), path
            with Session(restored.state.engine) as db:
                alice = db.scalar(select(User).where(User.email == built["alice"]))
            login(client, alice)  # the same password; a new web_sessions row (its sequence was fixed)
        with Session(restored.state.engine, expire_on_commit=False) as db:
            newest_user, newest_task = db.scalar(select(func.max(User.id))), db.scalar(select(func.max(RankingTask.id)))
            # New rows get fresh ids: the sequences were moved past the restored ones.
            admin = make_user(db, role=Role.admin)
            task = make_task(db, db.get(Project, built["project"]))
            assert admin.id == newest_user + 1 and task.id == newest_task + 1
            assert db.scalar(select(func.count()).select_from(WebSession)) == 2
        with TestClient(restored) as client:
            login(client, admin)
            zipped = client.get(f"/admin/models/{built['policy']}/download")
            assert zipped.status_code == 200 and len(zipped.content) > 1_400_000  # found at the rewritten path
    finally:
        restored.state.engine.dispose()


# ---- the command line, as a subprocess --------------------------------------------------------

def cli(*args: str, settings: Settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKLAB_")}
    env.update(RANKLAB_DATA_DIR=str(settings.data_dir), RANKLAB_DATABASE_URL=settings.sqlalchemy_url)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_round_trip_to_the_other_backend_and_refusal_of_a_second_import(request, source, source_app, source_db,
                                                                            tmp_path):
    with TestClient(source_app) as client:
        build_project(source_db, source, client)
    archive = tmp_path / "cli-backup.tar"
    exported = cli("export-all", "--out", str(archive), settings=source)
    assert exported.returncode == 0, exported.stderr
    assert f"Wrote {archive}" in exported.stdout and "not archived: model version" in exported.stdout
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))

    other = "postgres" if source.sqlalchemy_url.startswith("sqlite") else "sqlite"
    target = target_settings(request, tmp_path, other)
    imported = cli("import-all", str(archive), settings=target)
    assert imported.returncode == 0, imported.stderr
    assert "Restored" in imported.stdout and "2 artifact paths rewritten" in imported.stdout
    check_restored(source, target, manifest)

    again = cli("import-all", str(archive), settings=target)
    assert again.returncode == 2 and "already holds data (" in again.stderr and "users: 4" in again.stderr
    assert "Traceback" not in again.stderr
    assert counts(target.sqlalchemy_url) == {name: meta["rows"] for name, meta in manifest["tables"].items()}


# ---- refusals: a clear message, and nothing written --------------------------------------------

@pytest.fixture
def small_archive(sqlite_template, tmp_path) -> tuple[Path, Settings]:
    """A SQLite install with a project, a member, a model version and its artifact, exported."""
    data = tmp_path / "small"
    data.mkdir()
    (data / "ranklab.sqlite").write_bytes(sqlite_template.read_bytes())
    settings = make_settings(data, f"sqlite:///{data / 'ranklab.sqlite'}")
    engine = make_engine(settings.sqlalchemy_url)
    with Session(engine, expire_on_commit=False) as db:
        project = make_project(db)
        make_user(db, projects=[project])
        write_artifact(settings.artifacts_dir / "project-1" / "round-0" / "policy", 5)
        make_version(db, project, artifact_path=str(settings.artifacts_dir / "project-1" / "round-0" / "policy"))
    engine.dispose()
    archive = tmp_path / "small.tar"
    export_all(settings, archive)
    return archive, settings


def rewrite_archive(source: Path, target: Path, edit: Callable[[str, bytes], bytes | None], *,
                    fix_checksums: bool = False) -> Path:
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
    flipped = rewrite_archive(archive, tmp_path / "flipped.tar", lambda name, data: data.replace(b"project", b"prOject")
                              if name == "tables/projects.jsonl" else data)
    with pytest.raises(BackupError, match=r"checksum mismatch for tables/projects\.jsonl .* Nothing was restored"):
        import_all(target, flipped)
    assert_nothing_restored(target)

    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match=r"cannot be read as a tar archive|has no manifest\.json"):
        import_all(target, truncated)
    dropped = rewrite_archive(archive, tmp_path / "dropped.tar",
                              lambda name, data: None if name.endswith("adapter_model.safetensors") else data)
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
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tar") or ".tmp-" in p.name
                  or ".rows-" in p.name) == ["small.tar"]  # no partial archive left behind


def test_a_column_type_without_a_codec_stops_the_export():
    gadgets = Table("gadgets", MetaData(), Column("id", Integer, primary_key=True), Column("tags", ARRAY(Integer)))
    with pytest.raises(BackupError, match=r"gadgets\.tags has the column type .* app/backup/format\.py"):
        RowCodec(gadgets)
