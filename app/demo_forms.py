"""Demo projects of the feedback forms (issue 15) `ranklab bootstrap` seeds beside the ranking
demo: pairwise, Likert, multi-aspect and good/bad, each on a few of the ranking demo's prompts
(the answer carrying an HTML/script payload always among those shown), uploaded through the same
services as an API upload, so their tasks are of the project's form."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import FeedbackForm, Project, ProjectMember, User
from app.projects import service as projects
from app.prompts import service as prompts
from app.prompts.schemas import PromptIn

FORM_DEMOS: dict[str, tuple[str, dict, int, str]] = {
    FeedbackForm.pairwise: (
        "Demo: A/B comparison",
        {},
        2,
        "Pick the better answer (A or B), call a tie, or say both are bad.",
    ),
    FeedbackForm.likert: (
        "Demo: rate answers 1–7",
        {"likert_points": 7, "likert_labels": ["Awful", "Bad", "Poor", "Okay", "Good", "Great", "Excellent"]},
        3,
        "Rate every answer on its own from 1 (awful) to 7 (excellent).",
    ),
    FeedbackForm.multi_aspect: (
        "Demo: helpful, harmless, honest",
        {
            "likert_points": 5,
            "aspects": [
                {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
                {"name": "harmlessness", "label": "Harmless", "scale": "likert"},
                {"name": "honesty", "label": "Honest", "scale": "ranking"},
            ],
            "overall_ranking": True,
        },
        3,
        "Rate helpfulness and harmlessness 1–5, order the answers by honesty, then overall.",
    ),
    FeedbackForm.good_bad: (
        "Demo: good or bad",
        {},
        3,
        "Would you be happy to see this answer from the assistant? Good or bad, each on its own.",
    ),
}
"""form -> (project name, form settings, completions per task, guidelines)."""

PROMPTS_PER_DEMO = 4


def seed_form_demos(db: Session, *, labeler: User | None, demo_prompts) -> list[Project]:
    """One project per feedback form; `demo_prompts` are the ranking demo's (external id, text, answers)."""
    seeded = []
    for form, (name, settings, k, guidelines) in FORM_DEMOS.items():
        project = projects.create_project(
            db,
            name=name,
            guidelines=guidelines,
            feedback_form=form,
            form_settings=settings,
            k_min=k,
            k_max=k,
            description="A feedback-form sample seeded by `ranklab bootstrap`.",
        )
        chosen = demo_prompts[:PROMPTS_PER_DEMO]
        rows = [PromptIn(external_id=external_id, text=text) for external_id, text, _ in chosen]
        prompts.add_prompts(db, project=project, prompts=rows)
        for external_id, _text, answers in chosen:
            shown = sorted(answers, key=lambda answer: "<" not in answer)[:k]  # the payload first, if any
            prompts.add_completions(
                db,
                project=project,
                prompt_external_id=external_id,
                completions=[{"text": answer, "model": "demo"} for answer in shown],
            )
        if labeler is not None:
            db.add(ProjectMember(project_id=project.id, user_id=labeler.id))
        db.flush()
        seeded.append(project)
    return seeded
