"""Small helpers shared by the labeling tests (service calls with the defaults tests want)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.demonstrations import service as demonstrations
from app.labeling import service, submission
from app.labeling.schemas import RankingIn, SubmissionIn
from app.labeling.task_types import DEMONSTRATION, DEMONSTRATION_REVIEW, PAIRWISE_EVAL
from app.models import (
    Assignment,
    Completion,
    Demonstration,
    Feedback,
    FeedbackRating,
    ModelVersion,
    PairwiseComparison,
    Project,
    Prompt,
    Ranking,
    RankingTask,
    User,
    utcnow,
)


def next_view(db: Session, user: User, project: Project, **kw) -> service.TaskView | None:
    """Asks for the labeler's task and commits, as a request would."""
    view = service.current_task(db, user=user, project=project, sweep_every=kw.pop("sweep_every", 3600), **kw)
    db.commit()
    return view


def strict_order(view: service.TaskView) -> list[list[int]]:
    return [[c.id] for c in view.completions]


def submit(db: Session, user: User, project: Project, view: service.TaskView, groups=None, **fields):
    """Submits `groups` (default: the completions as shown), or for a kind whose answer is no
    ranking the answer its page sends (ANSWERS; `groups` given: a different valid answer, as a
    retry that changed its mind would send)."""
    now = fields.pop("now", None)
    data: RankingIn | SubmissionIn
    if view.kind in ANSWERS:
        data = SubmissionIn(**{**ANSWERS[view.kind](view, changed=groups is not None), **fields})
    elif groups is None and view.kind == PAIRWISE_EVAL:
        data = SubmissionIn(verdict=fields.pop("verdict", "A"), **fields)
    else:
        data = RankingIn(ranking=groups if groups is not None else strict_order(view), **fields)
    result = submission.submit_answer(
        db, user=user, project=project, assignment_id=view.assignment_id, data=data, sweep_every=3600, now=now
    )
    db.commit()
    return result


ANSWERS = {
    DEMONSTRATION: lambda view, changed: {"response": "A **better** answer." if changed else "The *ideal* answer."},
    DEMONSTRATION_REVIEW: lambda view, changed: (
        {"decision": "reject", "comment": "no"} if changed else {"decision": "edit", "reviewed_response": "Edited."}
    ),
    "pairwise": lambda view, changed: {"verdict": "B" if changed else "A"},
    "likert": lambda view, changed: {
        "ratings": [{"completion_id": c.id, "value": 2 if changed else 1 + i} for i, c in enumerate(view.completions)]
    },
    "good_bad": lambda view, changed: {
        "ratings": [
            {"completion_id": c.id, "value": "bad" if changed or i else "good"} for i, c in enumerate(view.completions)
        ]
    },
    "multi_aspect": lambda view, changed: {
        "ratings": [{"completion_id": c.id, "aspect": "helpfulness", "value": 3} for c in view.completions],
        "aspect_rankings": {"honesty": [[c.id for c in view.completions]]},
        "ranking": [[c.id] for c in (reversed(view.completions) if changed else view.completions)],
    },
}
"""What each page sends for the kinds whose answer is no ranking (the feedback forms' under FORM_SETTINGS)."""

FORM_SETTINGS = {
    "pairwise": {},
    "likert": {"likert_points": 5, "likert_labels": ["awful", "poor", "fair", "good", "great"]},
    "good_bad": {},
    "multi_aspect": {
        "likert_points": 5,
        "likert_labels": [],
        "aspects": [
            {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
            {"name": "honesty", "label": "Honest <b>really</b>", "scale": "ranking"},
        ],
        "overall_ranking": True,
    },
}
"""The settings make_form_task gives a project of each feedback form (issue 15)."""


def make_form_task(db: Session, project: Project, kind: str, *, k: int | None = None) -> RankingTask:
    """A task of a feedback form, as an upload to a project of that form makes it: the project
    takes the form (and FORM_SETTINGS) first. k: 2 for pairwise, 3 otherwise."""
    from tests.factories import make_task

    project.feedback_form = kind
    project.form_settings = FORM_SETTINGS[kind]
    task = make_task(db, project, k=k or (2 if kind == "pairwise" else 3))
    task.kind = kind
    db.commit()
    return task


def make_demonstration_task(db: Session, project: Project, *, draft: str | None = "A model draft.") -> RankingTask:
    """A demonstration task made by the service, with a model draft (a completion of a policy version)."""
    prompt = _prompt(db, project)
    version = None
    if draft is not None:
        version = ModelVersion(project_id=project.id, kind="policy", name=f"draft-{prompt.id}", base_model="tiny")
        db.add(version)
        db.flush()
        db.add(Completion(prompt_id=prompt.id, text=draft, source="model", model_version_id=version.id))
        db.flush()
    created = demonstrations.create_demonstration_tasks(
        db, project, [prompt.id], draft_version_id=None if version is None else version.id
    )
    db.commit()
    return db.get(RankingTask, created.task_ids[0])


def make_review_task(db: Session, project: Project, *, author: User | None = None) -> RankingTask:
    """A review task of a demonstration written by `author` (default: a new member who is nobody
    the test hands tasks to), as the service opens it when a project reviews demonstrations."""
    from tests.factories import make_user

    author = author or make_user(db, projects=[project])
    task = make_demonstration_task(db, project, draft=None)
    task.status = "retired"  # only its review is handed out
    project.demonstration_review = True
    demonstration_id = demonstrations.store_demonstration(
        db,
        project=project,
        task_id=task.id,
        prompt_id=task.prompt_id,
        assignment_id=None,
        user_id=author.id,
        response="Paris is the capital of France.",
        draft_completion_id=None,
        time_spent_ms=1000,
        late=False,
        now=utcnow(),
    )
    db.commit()
    return db.scalars(select(RankingTask).where(RankingTask.demonstration_id == demonstration_id)).one()


def _prompt(db: Session, project: Project) -> Prompt:
    from tests.factories import _seq

    n = next(_seq)
    prompt = Prompt(
        project_id=project.id,
        external_id=f"d{n}",
        messages=[
            {"role": "user", "content": f"Question {n}?"},
            {"role": "assistant", "content": "Which part?"},
            {"role": "user", "content": "All of it."},
        ],
    )
    db.add(prompt)
    db.flush()
    return prompt


def fresh(db: Session) -> None:
    """Ends the test session's transaction: a SQLite (WAL) reader keeps seeing the database as of its
    BEGIN, so without this a test could read stale rows and miss what the app wrote. Also forgets
    loaded rows (rollback without a transaction expires nothing)."""
    db.rollback()
    db.expire_all()


def snapshot(db: Session) -> dict:
    """Everything a submit may change, to show that a rejected one changed nothing."""
    fresh(db)
    return {
        "rankings": db.scalar(select(func.count()).select_from(Ranking)),
        "pairs": db.scalar(select(func.count()).select_from(PairwiseComparison)),
        "feedback": db.scalar(select(func.count()).select_from(Feedback)),
        "ratings": db.scalar(select(func.count()).select_from(FeedbackRating)),
        "demonstrations": sorted(
            db.execute(select(Demonstration.id, Demonstration.status, Demonstration.reviewer_id)).all()
        ),
        "assignments": sorted(db.execute(select(Assignment.id, Assignment.state, Assignment.lease_expires_at)).all()),
        "tasks": sorted(
            db.execute(
                select(RankingTask.id, RankingTask.slots_taken, RankingTask.rankings_count, RankingTask.status)
            ).all()
        ),
    }


def make_labelers(db: Session, project: Project, n: int) -> list[User]:
    """n labelers in the project, sharing one password hash (hashing 32 passwords would take seconds)."""
    from app.auth.security import hash_password
    from app.models import ProjectMember, Role
    from tests.factories import PASSWORD, _seq

    password_hash = hash_password(PASSWORD)
    users = [
        User(email=f"labeler{next(_seq)}@example.com", password_hash=password_hash, role=Role.labeler) for _ in range(n)
    ]
    db.add_all(users)
    db.flush()
    db.add_all(ProjectMember(project_id=project.id, user_id=u.id) for u in users)
    db.commit()
    return users
