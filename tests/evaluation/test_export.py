"""Evaluation judgments in the exports: left out by default (the exports hold what they always
held), included with tasks=evaluation or tasks=all, each row saying it came from an evaluation,
and in the pairs format a judgment with a winner gives one pair, a tie or "both bad" none."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
from sqlalchemy import select

from app.models import RankingTask
from tests.api.conftest import bearer
from tests.evaluation.helpers import judge, opened, setup
from tests.factories import make_ranking, make_task, make_token


def rows(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_evaluation_judgments_export_as_pairs_only_when_asked(client, db):
    s = setup(db, prompts=3)
    evaluation = opened(db, s)
    ann = s.labelers[0]
    tasks = list(
        db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id).order_by(RankingTask.id))
    )
    judge(db, tasks[0], ann, "win", winner_version=s.policy.id)
    judge(db, tasks[1], ann, "tie")
    judge(db, tasks[2], ann, "both_bad")
    ranked = make_task(db, s.project, texts=["w", "x", "y", "z"], prompt_text="Rank these")
    w, x, y, z = ranked.completion_ids
    make_ranking(db, ranked, ann, [[w], [x], [y], [z]])
    auth = bearer(make_token(db, "export"))
    url = f"/api/v1/projects/{s.project.id}/exports"

    default = rows(client.get(f"{url}/pairs", headers=auth))
    assert len(default) == 6 and {r["source"] for r in default} == {"ranking"}
    assert {r["evaluation_id"] for r in default} == {None}

    evaluated = rows(client.get(f"{url}/pairs", headers=auth, params={"tasks": "evaluation"}))
    (pair,) = evaluated  # the tie and the both-bad give no pair
    winner = next(i.completion for i in tasks[0].items if i.completion.model_version_id == s.policy.id)
    loser = next(i.completion for i in tasks[0].items if i.completion.model_version_id == s.base.id)
    assert (pair["chosen"], pair["rejected"]) == (winner.text, loser.text)
    assert pair["prompt"] == tasks[0].prompt.text and pair["rank_gap"] == 1
    assert pair["source"] == "evaluation" and pair["evaluation_id"] == evaluation.id and pair["task_id"] == tasks[0].id

    both = rows(client.get(f"{url}/pairs", headers=auth, params={"tasks": "all", "style": "conversational"}))
    assert len(both) == 7 and [r["source"] for r in both].count("evaluation") == 1
    parquet = client.get(f"{url}/pairs", headers=auth, params={"tasks": "all", "format": "parquet"})
    assert [r["source"] for r in pq.read_table(io.BytesIO(parquet.content)).to_pylist()].count("evaluation") == 1

    judgments = rows(client.get(f"{url}/rankings", headers=auth, params={"tasks": "evaluation"}))
    assert [(r["ranking"], r["none_acceptable"]) for r in judgments][1:] == [
        ([tasks[1].completion_ids], False),
        ([tasks[2].completion_ids], True),
    ]
    assert {r["source"] for r in judgments} == {"evaluation"}
    assert [r["source"] for r in rows(client.get(f"{url}/rankings", headers=auth))] == ["ranking"]
    consensus = rows(client.get(f"{url}/consensus", headers=auth, params={"tasks": "evaluation"}))
    assert [r["task_id"] for r in consensus] == [t.id for t in tasks]

    refused = client.get(f"{url}/pairs", headers=auth, params={"tasks": "judgments"})
    assert refused.status_code == 422 and "tasks" in refused.json()["message"]
