"""Refreshing the handout's active-learning priorities (worker/loop/active_order.py) on a tiny
random-weight model: the score-head ensemble puts a constructed ambiguous task first, the handout
then gives it out first, and an AI judge's compare-only rankings are never fitted on. The whole
path through the admin's "refresh now", a real Celery worker and the handout: test_active_worker.py."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.labeling import service
from app.models import HandoutOrder, Project, RankingTask, Role
from app.models.judges import AI_ROLE
from app.models.labeling import Ranking
from app.projects import priorities
from app.prompts import completions
from app.prompts.schemas import PromptIn
from app.prompts.service import add_prompts
from app.rounds.queue import pending
from tests.factories import make_project, make_ranking, make_task, make_user
from tests.rounds.helpers import make_version
from worker.celery_app import REFRESH_PRIORITIES
from worker.loop.active_order import refresh_priorities, refresh_with

PROMPT = "write a story about the sun"
GOOD, BAD = "a good story about the sun .", "a bad story about the sun ."
CAT, DOG = "a story about the cat .", "a story about the dog ."


def ambiguous_project(db, *, order: str = HandoutOrder.uncertainty):
    """Humans always put GOOD above BAD (8 tasks); on CAT against DOG they split 2 : 2. Open: three
    GOOD/BAD tasks and one CAT/DOG task (the ambiguous one), plus an open task of another kind.
    An AI judge's compare-only rankings say BAD above GOOD: fitted on, they would blur the clear tasks."""
    project = make_project(db, k_min=2, k_max=4, overlap=1, handout_order=order)
    human = make_user(db, projects=[project])
    judge = make_user(db, role=AI_ROLE)
    for _ in range(8):
        task = make_task(db, project, texts=[GOOD, BAD], prompt_text=PROMPT)
        good, bad = task.completion_ids
        make_ranking(db, task, human, [[good], [bad]])
        db.add(Ranking(task_id=task.id, user_id=judge.id, project_id=project.id, groups=[[bad], [good]]))
    for n in range(4):
        task = make_task(db, project, texts=[CAT, DOG], prompt_text=PROMPT)
        cat, dog = task.completion_ids
        make_ranking(db, task, human, [[cat], [dog]] if n % 2 else [[dog], [cat]])
    db.commit()
    clear = [make_task(db, project, texts=[GOOD, BAD], prompt_text=PROMPT) for _ in range(2)]
    ambiguous = make_task(db, project, texts=[CAT, DOG], prompt_text=PROMPT)
    clear.append(make_task(db, project, texts=[BAD, GOOD], prompt_text=PROMPT))
    other = make_task(db, project, texts=[CAT, DOG], prompt_text=PROMPT)
    other.kind = "demonstration"  # not the project's form: never scored
    db.commit()
    return project, clear, ambiguous, other


@pytest.mark.parametrize(
    ("db_url", "order"),
    # (uncertainty on SQLite: through the worker in test_active_worker.py)
    [("postgres", HandoutOrder.uncertainty), ("sqlite", HandoutOrder.margin), ("sqlite", HandoutOrder.information)],
    indirect=["db_url"],
)
def test_the_ambiguous_task_gets_the_top_priority_and_is_handed_out_first(db, tiny_model_dir, order):
    project, clear, ambiguous, other = ambiguous_project(db, order=order)
    # Cold start: with fewer ranked tasks than the minimum, nothing is scored and the stats say so.
    cold = refresh_priorities(db, project.id, str(tiny_model_dir), min_ranked_tasks=100)
    assert cold["tasks"] == 0 and "of the 100 ranked tasks needed" in cold["skipped"]
    db.expire_all()
    assert db.get(RankingTask, ambiguous.id).handout_priority is None

    stats = refresh_priorities(db, project.id, str(tiny_model_dir), min_ranked_tasks=1)

    assert stats["method"] == order and stats["tasks"] == 4
    assert stats["rankings"] == 12  # the humans' only: the judge's 8 compare-only rankings are left out
    db.expire_all()
    priority = {t.id: t.handout_priority for t in db.scalars(select(RankingTask))}
    assert priority[other.id] is None
    assert priority[ambiguous.id] > max(priority[t.id] for t in clear)
    refreshed = db.get(Project, project.id)
    assert refreshed.priority_method == order and refreshed.priorities_refreshed_at is not None
    assert refreshed.priority_stats["tasks"] == 4

    labeler = make_user(db, role=Role.labeler, projects=[project])
    view = service.current_task(db, user=labeler, project=refreshed, sweep_every=3600)
    assert view is not None and view.task_id == ambiguous.id


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_a_ranking_to_fit_on_nothing_changes_and_the_stats_say_why(db, tiny_model_dir):
    project = make_project(db, k_min=2, k_max=4, handout_order=HandoutOrder.uncertainty)
    task = make_task(db, project, texts=[GOOD, BAD])
    task.handout_priority = 0.5
    db.commit()

    stats = refresh_priorities(db, project.id, str(tiny_model_dir), min_ranked_tasks=1)

    assert stats["tasks"] == 0 and "no human ranking orders two completions" in stats["skipped"]
    db.expire_all()
    assert db.get(RankingTask, task.id).handout_priority == 0.5
    assert db.get(Project, project.id).priorities_refreshed_at is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_refresh_is_enqueued_after_training_and_new_tasks_only_under_an_active_order(db):
    project = make_project(db, handout_order=HandoutOrder.default)
    assert not priorities.refresh_after_new_tasks(db, project_id=project.id)  # no reward model yet
    version = make_version(db, project, kind="reward", artifact_path="/models/rm")
    assert not priorities.refresh_after_training(db, project_id=project.id, reward_model_id=version.id)
    assert pending(db) == []
    project.handout_order = HandoutOrder.margin
    db.commit()
    assert priorities.refresh_after_training(db, project_id=project.id, reward_model_id=version.id)
    assert priorities.refresh_after_new_tasks(db, project_id=project.id)
    assert [(m.name, m.args, m.queue) for m in pending(db)] == [
        (REFRESH_PRIORITIES, (project.id, version.id), "evaluate"),
        (REFRESH_PRIORITIES, (project.id, version.id, None), "evaluate"),  # no task yet: None is the newest
    ]
    db.rollback()  # nothing is sent


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_uploaded_completions_ask_for_a_refresh_naming_the_newest_task(db):
    project = make_project(db, k_min=2, k_max=4, handout_order=HandoutOrder.information)
    add_prompts(db, project=project, prompts=[PromptIn(external_id=p, text=f"prompt {p}") for p in ("p1", "p2", "p3")])
    completions.add_completions(
        db, project=project, prompt_external_id="p1", completions=[{"text": GOOD}, {"text": BAD}]
    )
    assert pending(db) == []  # no reward model yet: nothing to score with
    db.commit()
    version = make_version(db, project, kind="reward", artifact_path="/models/rm")
    task, report = completions.add_completions(
        db, project=project, prompt_external_id="p2", completions=[{"text": GOOD}, {"text": BAD}]
    )
    assert report.created and [m.args for m in pending(db)] == [(project.id, version.id, task.id)]
    db.commit()
    completions.add_completions(
        db, project=project, prompt_external_id="p2", completions=[{"text": BAD}, {"text": GOOD}]
    )
    assert pending(db) == []  # the same set again creates nothing, so asks for nothing
    lines = [
        json.dumps({"external_id": p, "completions": [{"text": CAT}, {"text": DOG}]}).encode() for p in ("p1", "p3")
    ]
    report = completions.ingest_completion_groups(db, project=project, lines=lines)
    newest = db.scalar(select(func.max(RankingTask.id)))
    assert report.created == 2 and [m.args for m in pending(db)] == [(project.id, version.id, newest)]  # one per file
    db.rollback()
    project.handout_order = HandoutOrder.default
    db.commit()
    completions.add_completions(
        db, project=project, prompt_external_id="p3", completions=[{"text": GOOD}, {"text": DOG}]
    )
    assert pending(db) == []  # the default order uses no priorities
    db.rollback()


def test_a_refresh_asked_for_after_new_tasks_runs_once_per_newer_task(db, tiny_model_dir):
    project, _clear, ambiguous, _other = ambiguous_project(db)
    version = make_version(db, project, kind="reward", artifact_path=str(tiny_model_dir))
    newest = db.scalar(select(func.max(RankingTask.id)))

    first = refresh_with(db, project.id, version.id, covers_task_id=newest, min_ranked_tasks=1)
    assert first["tasks"] == 4 and first["newest_task_id"] == newest
    again = refresh_with(db, project.id, version.id, covers_task_id=newest, min_ranked_tasks=1)
    assert again == {"project_id": project.id, "skipped": f"a later refresh already scored task {newest}"}

    late = make_task(db, project, texts=[CAT, DOG], prompt_text=PROMPT)
    assert refresh_with(db, project.id, version.id, covers_task_id=late.id, min_ranked_tasks=1)["tasks"] == 5
    db.expire_all()
    assert db.get(RankingTask, late.id).handout_priority is not None
    project = db.get(Project, project.id)
    project.handout_order = HandoutOrder.margin  # another order: the stored priorities do not cover it
    db.commit()
    assert refresh_with(db, project.id, version.id, covers_task_id=late.id, min_ranked_tasks=1)["tasks"] == 5
    assert db.get(Project, project.id).priority_method == "margin"
