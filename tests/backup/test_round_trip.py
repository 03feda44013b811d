"""Backup and restore: `ranklab export-all` then `ranklab import-all` gives back the same project.

A realistic project (rankings with ties and flags, leases and skips, rounds with events, model
versions with artifact folders as the worker writes them, sessions, tokens) is exported from one
backend and restored into a fresh database of each backend; every table is compared column by
column, the artifact bytes file by file, and the restored app answers the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.backup import schema
from app.backup.dump import export_all
from app.backup.restore import import_all
from app.db import make_engine
from app.main import create_app
from app.models import (
    Assignment,
    Completion,
    ModelVersion,
    Project,
    Prompt,
    RankingTask,
    Role,
    RoundPrompt,
    User,
    WebSession,
    utcnow,
)
from app.settings import ROOT, Settings
from tests.backup.helpers import counts, target_settings, write_artifact
from tests.backup.samples import build_demonstrations, build_feedback
from tests.evaluation.helpers import add_evaluation_sample
from tests.factories import (
    login,
    make_project,
    make_ranking,
    make_task,
    make_token,
    make_user,
)
from tests.judges.helpers import populate_judge_rows
from tests.rounds.helpers import add_event, make_round, make_round_task, make_version
from tests.sft.helpers import populate_jobs

# ---- a realistic project ----------------------------------------------------------------------


def build_project(db: Session, settings: Settings, client: TestClient) -> dict:
    project = make_project(
        db, name="helpfulness ✓", overlap=2, flags=["unsafe", "too_long"], guidelines="# Rank\nBest **first**."
    )
    make_user(db, role=Role.admin)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    gone = make_user(db)
    gone.is_active = False
    token = make_token(db, "export", "admin")

    # Uploaded tasks: a strict order with a flag, a tie marked late, a chat prompt "none acceptable".
    t1 = make_task(db, project, texts=["best", "good 😀", "ok\nmultiline", 'bad "quoted"'], prompt_text="Say hi")
    a, b, c, d = t1.completion_ids
    make_ranking(
        db, t1, alice, [[a], [b], [c], [d]], flags={str(d): ["unsafe"]}, time_spent_ms=4200, comment="d is rude"
    )
    make_ranking(db, t1, bob, [[a, b], [c, d]], late=True, time_spent_ms=900)
    t2 = make_task(db, project, k=5)
    chat = db.get(Prompt, t2.prompt_id)
    chat.text, chat.messages = None, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Go"}]
    chat.meta, chat.split = {"source": "forum", "score": 1.5, "tags": ["a", None]}, "validation"
    ids = t2.completion_ids
    make_ranking(db, t2, alice, [[ids[4]], ids[:4]], none_acceptable=True, flags={str(ids[0]): ["too_long", "unsafe"]})
    # A live lease and a skip on a third task.
    t3 = make_task(db, project)
    db.add_all(
        [
            Assignment(
                task_id=t3.id,
                user_id=bob.id,
                project_id=project.id,
                state="leased",
                lease_expires_at=utcnow() + timedelta(minutes=30),
                display_order=list(reversed(t3.completion_ids)),
            ),
            Assignment(
                task_id=t3.id,
                user_id=alice.id,
                project_id=project.id,
                state="skipped",
                lease_expires_at=utcnow(),
                finished_at=utcnow(),
                skip_reason="not my language",
            ),
        ]
    )
    t3.slots_taken = 1
    db.commit()

    # Round 0 trained a reward model and a policy; round 1 is labeling the policy's completions.
    base = make_version(db, project, kind="base", name="hub base", artifact_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    r0 = make_round(
        db,
        project,
        number=0,
        status="done",
        policy_in_id=base.id,
        progress=0.1 + 0.2,
        started_at=datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        finished_at=utcnow(),
        heartbeat_at=utcnow(),
        claim_token="run-1",
    )
    folder = settings.artifacts_dir / f"project-{project.id}" / "round-0"
    write_artifact(folder / "reward", 3)
    write_artifact(folder / "policy", 7)
    write_artifact(folder / "sft", 11)
    reward = make_version(
        db,
        project,
        kind="reward",
        parent=base,
        training_round=r0,
        artifact_path=str(folder / "reward"),
        metrics={"val_accuracy": 0.7500000000000001, "steps": 2**40},
    )
    policy = make_version(db, project, kind="policy", training_round=r0, artifact_path=str(folder / "policy"))
    # Lineage pointing at a *later* id (restored in a second pass), and a path relative to artifacts_dir.
    sft = make_version(db, project, kind="sft", parent=base, artifact_path=f"project-{project.id}/round-0/sft")
    policy.parent_id = sft.id
    r0.reward_model_id, r0.policy_out_id = reward.id, policy.id
    r0.metrics = {"reward": {"val_accuracy": 0.75}, "policy": {"kl": 0.0123456789, "score_first": -1.25}}
    db.commit()
    add_event(db, r0, kind="log", stage="training_reward", message="reward model: step 2/2 ✓")
    add_event(
        db,
        r0,
        kind="metric",
        stage="training_policy",
        step=3,
        data={"kl": 0.0123456789, "reward": -1.5, "nested": {"a": [1, 2.5, None]}},
    )
    r1 = make_round(db, project, number=1, status="labeling", policy_in_id=policy.id)
    rt = make_round_task(db, project, r1, k=4)
    for i, completion in enumerate(db.scalars(select(Completion).where(Completion.prompt_id == rt.prompt_id))):
        completion.generation_params, completion.token_count = {"temperature": 0.7, "top_p": 0.95}, 10 + i
        completion.finish_reason = "eos" if i else "length"
    db.add(RoundPrompt(round_id=r1.id, prompt_id=rt.prompt_id, batch=0, generated_at=utcnow()))
    db.commit()
    w, x, y, z = rt.completion_ids
    make_ranking(db, rt, bob, [[x], [y, z], [w]])
    evaluation = add_evaluation_sample(db, project, base=base, policy=policy, reward=reward, judges=[alice, bob]).id
    build_demonstrations(db, project, author=alice, reviewer=bob)
    build_feedback(db, author=alice)
    populate_judge_rows(db, project, task=rt)  # an AI judge, its run, its verdict and ranking (issue 16)
    # An SFT run: its version (no artifact: the archive's folders are checked above), a loss point, lineage.
    populate_jobs(db, project, start=base, artifact_path=None)

    # A browser session and a failed login, through the app.
    login(client, alice)
    assert client.post("/login", data={"email": bob.email, "password": "wrong"}).status_code == 401
    return {
        "project": project.id,
        "token": token,
        "alice": alice.email,
        "round": r1.id,
        "policy": policy.id,
        "evaluation": evaluation,
    }


def api_answers(client: TestClient, built: dict) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {built['token']}"}
    base = f"/api/v1/projects/{built['project']}"
    paths = [
        f"{base}/exports/rankings",
        f"{base}/exports/consensus",
        f"{base}/exports/pairs?style=conversational",
        f"{base}/models",
        f"/api/v1/rounds/{built['round']}",
        f"/api/v1/evaluations/{built['evaluation']}",
        f"{base}/exports/pairs?tasks=all",
    ]
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
            return {
                table.name: [
                    tuple(norm(v) for v in row)
                    for row in conn.execute(select(table).order_by(*table.primary_key.columns))
                ]
                for table in schema.tables()
            }
    finally:
        engine.dispose()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_restored(source: Settings, target: Settings, manifest: dict) -> None:
    """Every table column by column (artifact paths moved to the target's data dir) and every artifact byte."""
    expected, actual = snapshot(source.sqlalchemy_url), snapshot(target.sqlalchemy_url)
    assert all(expected.values()), [name for name, rows in expected.items() if not rows]  # every table is covered
    path_column = [c.name for c in ModelVersion.__table__.columns].index("artifact_path")
    old, new = str(source.artifacts_dir), str(target.artifacts_dir)
    expected["model_versions"] = [
        row[:path_column] + (row[path_column] and row[path_column].replace(old, new),) + row[path_column + 1 :]
        for row in expected["model_versions"]
    ]
    for name, rows in expected.items():
        assert actual[name] == rows, name
    assert manifest["artifact_roots"] and tree_bytes(source.artifacts_dir) == tree_bytes(target.artifacts_dir)
    assert (target.data_dir / "secret_key").read_text() == (source.data_dir / "secret_key").read_text()


# ---- the round trip ---------------------------------------------------------------------------


def test_round_trip_keeps_every_row_artifact_and_answer(source, app, db, target, tmp_path):
    with TestClient(app) as client:
        built = build_project(db, source, client)
        before = api_answers(client, built)
    archive = tmp_path / "backup.tar.gz"
    manifest = export_all(source, archive)
    assert manifest["alembic_revision"] == schema.code_head()
    # 7 rankings: 6 by people, 1 by the AI judge (its 4 completions give 6 of the 26 pairs)
    assert manifest["tables"]["rankings"]["rows"] == 7 and manifest["tables"]["pairwise_comparisons"]["rows"] == 26
    assert manifest["tables"]["evaluations"]["rows"] == 1 and manifest["tables"]["version_evals"]["rows"] == 1
    assert [s["artifact_path"] for s in manifest["not_archived"]] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]

    report = import_all(target, archive)
    assert report["tables"] == {name: meta["rows"] for name, meta in manifest["tables"].items()}
    assert report["paths_rewritten"] == 2 and report["artifact_files"] == 6 and report["notes"] == []
    check_restored(source, target, manifest)
    null_messages = "SELECT count(*) FROM prompts WHERE messages IS NULL"  # SQL NULL stays SQL NULL
    for url in (source.sqlalchemy_url, target.sqlalchemy_url):
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(text(null_messages)) == 6  # three of the project, two eval prompts, one rated
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
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_round_trip_to_the_other_backend_and_refusal_of_a_second_import(request, source, app, db, tmp_path):
    with TestClient(app) as client:
        build_project(db, source, client)
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
    assert again.returncode == 2 and "already holds data (" in again.stderr and "users: 5" in again.stderr  # 4 + AI
    assert "Traceback" not in again.stderr
    assert counts(target.sqlalchemy_url) == {name: meta["rows"] for name, meta in manifest["tables"].items()}
