"""Plain functions that create rows for tests (each commits, so the app sees them)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from functools import cache

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.security import hash_password
from app.deps import SESSION_COOKIE
from app.labeling.ranking_store import RANKING_FIELDS, store_ranking
from app.models import (
    Assignment,
    AssignmentState,
    Completion,
    CompletionSource,
    Evaluation,
    EvaluationStatus,
    ModelVersion,
    Project,
    ProjectMember,
    Prompt,
    PromptSplit,
    Ranking,
    RankingTask,
    Role,
    TaskCompletion,
    User,
    utcnow,
)

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)


@cache
def password_hash() -> str:
    """PASSWORD hashed once for all test users. An argon2 hash costs 0.1-0.5 s of CPU on two cores
    (the point of argon2), and the suite makes well over a thousand users: hashing each one took
    minutes. Logins still verify this real hash; create_user's own hashing is tested in test_auth."""
    return hash_password(PASSWORD)


def end_read_snapshot(db: Session) -> None:
    """Commits before a factory writes. On SQLite (WAL) a transaction that began by reading cannot
    take the write lock once another connection (a Celery worker, a request) has committed since:
    SQLite fails at once with "database is locked", whatever the busy timeout. A test session often
    holds such a read open (it just checked a row), so each factory starts a fresh transaction.
    Anything pending would have been committed by the factory anyway."""
    db.commit()


def make_user(db: Session, *, role: str = Role.labeler, email: str | None = None, projects: list[Project] = ()) -> User:
    """A user as auth_service.create_user makes one, with the shared password hash."""
    end_read_snapshot(db)
    email = (email or f"user{next(_seq)}@example.com").strip().lower()
    user = User(email=email, password_hash=password_hash(), role=role, display_name=email.split("@")[0])
    db.add(user)
    db.flush()
    for project in projects:
        db.add(ProjectMember(project_id=project.id, user_id=user.id))
    db.commit()
    return user


def make_project(db: Session, **fields) -> Project:
    end_read_snapshot(db)
    project = Project(name=fields.pop("name", f"project {next(_seq)}"), **fields)
    db.add(project)
    db.commit()
    return project


def add_member(db: Session, project: Project, user: User) -> None:
    end_read_snapshot(db)
    db.add(ProjectMember(project_id=project.id, user_id=user.id))
    db.commit()


def make_task(
    db: Session, project: Project, *, k: int = 4, texts: list[str] | None = None, prompt_text: str | None = None
) -> RankingTask:
    end_read_snapshot(db)
    n = next(_seq)
    prompt = Prompt(project_id=project.id, external_id=f"p{n}", text=prompt_text or f"Prompt number {n}")
    db.add(prompt)
    db.flush()
    texts = texts or [f"completion {i} of prompt {n}" for i in range(k)]
    completions = [Completion(prompt_id=prompt.id, text=t) for t in texts]
    db.add_all(completions)
    db.flush()
    task = RankingTask(project_id=project.id, prompt_id=prompt.id)
    db.add(task)
    db.flush()
    db.add_all(TaskCompletion(task_id=task.id, completion_id=c.id, position=i) for i, c in enumerate(completions))
    db.commit()
    return task


def make_eval_task(
    db: Session,
    project: Project,
    *,
    evaluation: Evaluation | None = None,
    texts: tuple[str, str] | None = None,
    prompt_text: str | None = None,
) -> RankingTask:
    """A blind evaluation task as the evaluation service creates one: an eval-split prompt, one
    completion from each of the evaluation's two versions (source "model", purpose "eval"), and a
    ranking_tasks row of kind "pairwise_eval". Without `evaluation`, a new one comparing two new
    policy versions (named "secret-policy-<n>-old"/"-new", so a test can look for the names).
    `texts`: the first version's completion, then the second's."""
    end_read_snapshot(db)
    n = next(_seq)
    if evaluation is None:
        versions = [
            ModelVersion(project_id=project.id, kind="policy", name=f"secret-policy-{n}-{age}", base_model="tiny/base")
            for age in ("old", "new")
        ]
        db.add_all(versions)
        db.flush()
        ids = [v.id for v in versions]
        evaluation = Evaluation(
            project_id=project.id,
            name=f"evaluation {n}",
            status=EvaluationStatus.labeling,
            version_ids=ids,
            comparisons=[ids],
            config={"prompts": 1, "seed": 0},
        )
        db.add(evaluation)
        db.flush()
    first, second = evaluation.comparisons[0]
    prompt = Prompt(
        project_id=project.id, external_id=f"eval{n}", text=prompt_text or f"Eval prompt {n}", split=PromptSplit.eval
    )
    db.add(prompt)
    db.flush()
    texts = texts or (f"one answer to eval prompt {n}", f"another answer to eval prompt {n}")
    completions = [
        Completion(
            prompt_id=prompt.id,
            text=text,
            source=CompletionSource.model,
            model_version_id=version_id,
            generation_params={"purpose": "eval", "seed": 0},
        )
        for version_id, text in zip((first, second), texts, strict=True)
    ]
    db.add_all(completions)
    db.flush()
    task = RankingTask(project_id=project.id, prompt_id=prompt.id, kind="pairwise_eval", evaluation_id=evaluation.id)
    db.add(task)
    db.flush()
    db.add_all(TaskCompletion(task_id=task.id, completion_id=c.id, position=i) for i, c in enumerate(completions))
    db.commit()
    return task


def make_token(db: Session, *scopes: str) -> str:
    end_read_snapshot(db)
    _row, plaintext = auth_service.create_api_token(db, name="test", scopes=list(scopes), created_by=None)
    db.commit()
    return plaintext


def login(client: TestClient, user: User) -> TestClient:
    """Signs `user` in on `client`: the session a successful POST /login starts, and its cookie.
    The form itself (password check, rate limit, cookie flags) is tested in tests/test_auth.py;
    here it would only spend an argon2 verification (0.1-0.5 s of CPU) per login."""
    assert user.is_active, "an inactive user cannot log in"
    state = client.app.state
    with state.write_sessionmaker() as session, session.begin():
        token = auth_service.start_session(session, user=session.get(User, user.id), hours=state.settings.session_hours)
    client.cookies.delete(SESSION_COOKIE)  # a session from an earlier login, under any domain
    client.cookies.set(SESSION_COOKIE, token)
    return client


def csrf_of(client: TestClient, db: Session) -> str:
    """The CSRF token of the client's current session (as a page would embed it)."""
    from sqlalchemy import select

    from app.auth.security import token_digest
    from app.models import WebSession

    token = client.cookies.get("ranklab_session")
    return db.scalar(select(WebSession.csrf_token).where(WebSession.token_hash == token_digest(token)))


def make_ranking(db: Session, task: RankingTask, user: User, groups: list[list[int]], **fields) -> Ranking:
    """Stores a submitted ranking the way a submit does: the labeler leases the task (taking one of
    its slots, as the handout does), then the labeling service's own store_ranking writes the
    ranking and its pairs, marks the assignment submitted and counts the ranking on the task.

    `fields` are other ranking columns (flags, none_acceptable, time_spent_ms, comment, late,
    created_at, display_order); the completions were shown in the ranked order unless
    `display_order` says otherwise."""
    end_read_snapshot(db)
    unknown = set(fields) - set(RANKING_FIELDS)
    if unknown:
        raise TypeError(f"make_ranking: not a ranking field: {', '.join(sorted(unknown))}")
    project = db.get(Project, task.project_id)
    now = utcnow()
    lease = timedelta(minutes=project.lease_minutes)
    late = fields.get("late", False)
    order = fields.pop("display_order", [c for group in groups for c in group])
    db.execute(update(RankingTask).where(RankingTask.id == task.id).values(slots_taken=RankingTask.slots_taken + 1))
    assignment = Assignment(
        task_id=task.id,
        user_id=user.id,
        project_id=task.project_id,
        state=AssignmentState.leased,
        display_order=order,
        leased_at=now - lease if late else now,
        lease_expires_at=now if late else now + lease,  # a late ranking came after its lease ran out
    )
    db.add(assignment)
    db.flush()
    ranking = {
        "flags": {},
        "none_acceptable": False,
        "time_spent_ms": None,
        "comment": "",
        "late": False,
        "created_at": now,
        **fields,
        "task_id": task.id,
        "user_id": user.id,
        "project_id": task.project_id,
        "assignment_id": assignment.id,
        "groups": groups,
        "display_order": order,
    }
    ranking_id = store_ranking(db, ranking=ranking, overlap=project.overlap, now=now)
    db.commit()
    db.refresh(task)  # its counts were updated in SQL
    return db.get(Ranking, ranking_id)
