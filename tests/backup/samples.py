"""Sample rows for the backup round trip beside the ranking project (test_round_trip.py): a
demonstration and its review task, and a multi-aspect feedback judgment."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import OVERALL, Demonstration, Feedback, FeedbackRating, RankingTask, utcnow
from tests.factories import make_project, make_task


def build_demonstrations(db: Session, project, *, author, reviewer) -> None:
    """Issue 13's rows: a demonstration task with a model draft, a demonstration written from it,
    an uploaded one, and the review task pointing back at the first (ranking_tasks and
    demonstrations point at each other: the restore fills that reference in a second pass)."""
    task = make_task(db, project, k=1, texts=["a draft ✓ to start from"])
    task.kind = "demonstration"
    task.prompt.text, task.prompt.messages = (
        None,
        [  # a chat: the labeler continues it as the assistant
            {"role": "user", "content": "Hi ✓"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Say it <b>twice</b>"},
        ],
    )
    written = Demonstration(
        project_id=project.id,
        prompt_id=task.prompt_id,
        task_id=task.id,
        user_id=author.id,
        response="The *ideal* answer ✓",
        response_html="<p>The <em>ideal</em> answer ✓</p>",
        draft_completion_id=task.completion_ids[0],
        edit_distance=12,
        time_spent_ms=30500,
        status="pending_review",
        meta={"words": 4},
    )
    uploaded = Demonstration(
        project_id=project.id,
        prompt_id=task.prompt_id,
        external_id="row-1",
        response="uploaded",
        response_html="<p>uploaded</p>",
        status="accepted",
        source="upload",
        reviewer_id=reviewer.id,
        reviewed_at=utcnow(),
        reviewed_response="uploaded, edited",
        review_comment="tightened",
    )
    db.add_all([written, uploaded])
    db.flush()
    db.add(
        RankingTask(
            project_id=project.id, prompt_id=task.prompt_id, kind="demonstration_review", demonstration_id=written.id
        )
    )
    db.commit()


def build_feedback(db: Session, *, author) -> None:
    """A multi-aspect project's judgment: its feedback row (the form settings it was answered
    under) and per-completion, per-aspect ratings, one with a critique."""
    settings = {
        "likert_points": 5,
        "likert_labels": [],
        "overall_ranking": True,
        "aspects": [{"name": "helpfulness", "label": "Helpful ✓", "scale": "likert"}],
    }
    project = make_project(db, name="aspects ✓", feedback_form="multi_aspect", k_min=1, k_max=9)
    project.form_settings = settings
    task = make_task(db, project, k=2)
    task.kind = "multi_aspect"
    first, second = task.completion_ids
    db.add(
        Feedback(
            task_id=task.id,
            user_id=author.id,
            project_id=project.id,
            form="multi_aspect",
            settings=settings,
            display_order=[second, first],
            time_spent_ms=4200,
            comment="close call ✓",
            ratings=[
                FeedbackRating(completion_id=first, aspect=OVERALL, value=0, critique="cites a *source* ✓"),
                FeedbackRating(completion_id=second, aspect=OVERALL, value=1),
                FeedbackRating(completion_id=first, aspect="helpfulness", value=5),
                FeedbackRating(completion_id=second, aspect="helpfulness", value=2),
            ],
        )  # fmt: skip
    )
    db.commit()
