"""An AI-labelled round (RLAIF, labeling.source "judge") through a real Celery worker and a real
OpenAI-compatible judge endpoint: generate → the judge ranks every task (taking one overlap slot
each, as a labeler would) → reward model → PPO → the next round, which hands back to the humans.
The endpoint is down at first: the round fails at judging with the endpoint's error, nothing of
the task it was on is stored, and a retry finishes the round from there."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.models import Ranking, RankingTask
from app.models.judges import JudgeRun
from tests.judges.helpers import set_judge
from tests.loop.helpers import Api
from tests.loop.test_loop import tiny_config
from tests.openai_server import OpenAIServer

ANSWER = re.compile(r"### Answer (\d+)\n(.*?)(?=\n+### Answer \d+\n|\Z)", re.S)


def longest_first(messages, _i) -> str:
    """A judge that prefers longer answers (ties: the lower number shown first)."""
    shown = ANSWER.findall(messages[-1]["content"])
    ordered = sorted(shown, key=lambda item: (-len(item[1].strip()), int(item[0])))
    return "Ranking: " + " > ".join(number for number, _ in ordered)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_round_labelled_by_the_judge_alone(db, client, admin_token, loop_project, tiny_model_dir, start_worker):
    project, _labelers = loop_project
    api = Api(client, admin_token)
    with OpenAIServer(model_name="judge", reply=longest_first) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="judge", max_attempts=2)
        server.fail_next(503, times=2)  # the first task's both tries: the endpoint is down
        worker = start_worker()
        config = tiny_config(tiny_model_dir, labeling={"source": "judge", "judge_rounds": 1})
        round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)

        failed = api.wait_status(round0["id"], "failed", worker=worker)
        assert failed["error_step"] == "judging"
        assert "did not answer after 2 tries (HTTP 503)" in failed["error_message"]
        db.rollback()
        assert db.scalar(select(Ranking.id).where(Ranking.project_id == project.id)) is None  # nothing half-stored

        api.post(f"/api/v1/rounds/{round0['id']}/retry", {})
        round0 = api.wait_status(round0["id"], "done", worker=worker)

    # Every task was ranked by the judge's AI account, through an overlap slot (an assignment).
    db.rollback()
    tasks = db.scalars(select(RankingTask).where(RankingTask.round_id == round0["id"])).all()
    judged = round0["metrics"]["judging"]
    assert judged["tasks"] == len(tasks) and judged["judged"] + judged["undecided"] == len(tasks)
    assert judged["judged"] >= 1 and judged["judge"] == f"tiny v{judge.version}"
    rankings = db.scalars(select(Ranking).where(Ranking.task_id.in_([t.id for t in tasks]))).all()
    assert {r.user_id for r in rankings} == {judge.user_id} and len(rankings) == judged["judged"]
    assert all(r.assignment_id is not None for r in rankings)
    assert sorted(t.slots_taken for t in tasks if t.rankings_count) == [1] * judged["judged"]
    # One judge run, linked to the round, failed once and then finished by the retry.
    (run,) = db.scalars(select(JudgeRun).where(JudgeRun.round_id == round0["id"])).all()
    assert (run.status, run.judged) == ("done", judged["judged"])

    # The reward model trained on the judge's rankings; the next round waits for the humans.
    assert round0["metrics"]["reward"]["train_rankings"] + round0["metrics"]["reward"]["val_rankings"] == len(rankings)
    round1 = api.rounds(project.id)[0]
    assert (round1["number"], round1["status"]) == (1, "labeling")
    assert api.get(f"/api/v1/rounds/{round1['id']}")["config"]["labeling"]["source"] == "humans"
    events = [e["message"] for e in api.round(round0["id"], events_after=0)["events"]]
    assert any("training started (AI labels by tiny v" in message for message in events)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_ai_labelled_round_needs_a_judge(db, client, admin_token, loop_project, tiny_model_dir):
    project, _labelers = loop_project
    config = tiny_config(tiny_model_dir, labeling={"source": "judge"})
    answer = client.post(
        f"/api/v1/projects/{project.id}/rounds", json=config, headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert answer.status_code == 422, answer.text
    assert "labeling.source" in answer.text and "judge" in answer.text
