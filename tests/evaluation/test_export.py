"""Evaluation judgments in the exports: left out by default (the exports hold what they always
held), included with tasks=evaluation or tasks=all, each row saying it came from an evaluation,
and in the pairs format a judgment with a winner gives one pair, a tie or "both bad" none."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
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


def test_consensus_export_gives_evaluation_tasks_verdict_agreement_not_rank_measures(client, db):
    """Hand-computed: task 0 — two labelers pick the policy's answer, one seeing it as A and the other
    as B (the same verdict: compared by completion, not side), the third calls a tie: of 3 labeler
    pairs 1 agrees → 1/3. Task 1 — both bad twice → 1 of 1. Task 2 — one judgment → null, 0 pairs.
    Kendall's W and tau-b are null on evaluation tasks; a ranking task keeps them and gets no verdict
    agreement."""
    s = setup(db, prompts=3, overlap=3, labelers=3)
    evaluation = opened(db, s)
    tasks = list(
        db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id).order_by(RankingTask.id))
    )
    first = tasks[0]
    policy = next(i.completion_id for i in first.items if i.completion.model_version_id == s.policy.id)
    base = next(i.completion_id for i in first.items if i.completion.model_version_id == s.base.id)
    l0, l1, l2 = s.labelers
    make_ranking(db, first, l0, [[policy], [base]], display_order=[policy, base])  # "A"
    make_ranking(db, first, l1, [[policy], [base]], display_order=[base, policy])  # "B"
    judge(db, first, l2, "tie")
    judge(db, tasks[1], l0, "both_bad")
    judge(db, tasks[1], l1, "both_bad")
    judge(db, tasks[2], l2, "tie")
    ranked = make_task(db, s.project, texts=["w", "x", "y", "z"], prompt_text="Rank these")
    w, x, y, z = ranked.completion_ids
    make_ranking(db, ranked, l0, [[w], [x], [y], [z]])
    make_ranking(db, ranked, l1, [[w], [x], [y], [z]])
    auth = bearer(make_token(db, "export"))
    url = f"/api/v1/projects/{s.project.id}/exports/consensus"

    by_task = {r["task_id"]: r for r in rows(client.get(url, headers=auth, params={"tasks": "all"}))}
    assert [(by_task[t.id]["verdict_agreement"], by_task[t.id]["verdict_pairs"]) for t in tasks] == [
        (pytest.approx(1 / 3), 3),
        (1.0, 1),
        (None, 0),
    ]
    for t in tasks:
        row = by_task[t.id]
        assert (row["kendall_w"], row["mean_kendall_tau_b"]) == (None, None)
        assert (row["source"], row["evaluation_id"]) == ("evaluation", evaluation.id)
    rank_row = by_task[ranked.id]
    assert rank_row["kendall_w"] == pytest.approx(1.0) and rank_row["mean_kendall_tau_b"] == pytest.approx(1.0)
    assert (rank_row["verdict_agreement"], rank_row["verdict_pairs"], rank_row["source"]) == (None, None, "ranking")

    parquet = client.get(url, headers=auth, params={"tasks": "evaluation", "format": "parquet"})
    table = pq.read_table(io.BytesIO(parquet.content)).to_pylist()
    assert [r["verdict_pairs"] for r in table] == [3, 1, 0]
    assert table[0]["verdict_agreement"] == pytest.approx(1 / 3) and table[2]["verdict_agreement"] is None
