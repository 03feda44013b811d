"""A judge run end to end on a real database (SQLite and Postgres): the task body of
worker/loop/judging.py in-process, the tiny local model or the real OpenAI-compatible test
server (tests/openai_server.py) as the judge, the labeling service's storage."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from app.judges import agreement as judge_agreement
from app.judges import service
from app.labeling import handout
from app.models import Assignment, RankingTask, User
from app.models.judges import AI_ROLE, Judge, JudgeRun
from tests.factories import make_project, make_ranking, make_task, make_user
from tests.judges.helpers import ai_rankings, fresh, new_run, set_judge, task_counts, verdicts
from tests.openai_server import TEST_API_KEY, OpenAIServer
from worker.loop import judging


def _best_first(messages, _i) -> str:
    """A judge that reads the answers and prefers the one saying "best", then "good", "ok", "bad"."""
    text = messages[-1]["content"]
    shown = re.findall(r"### Answer (\d)\n(\w+)", text)
    quality = {"best": 0, "good": 1, "ok": 2, "bad": 3}
    return "Ranking: " + " > ".join(n for n, word in sorted(shown, key=lambda s: quality[s[1]]))


TEXTS = ["ok", "bad", "best", "good"]
"""A task's completions, in their given order; the right ranking is best, good, ok, bad."""


def _right(task) -> list[list[int]]:
    ids = dict(zip(TEXTS, task.completion_ids, strict=True))
    return [[ids["best"]], [ids["good"]], [ids["ok"]], [ids["bad"]]]


def test_the_local_judge_ranks_every_task_compare_only(db, unit, tiny_judge_dir):
    project = make_project(db, overlap=1)
    human = make_user(db, projects=[project])
    tasks = [make_task(db, project, k=4) for _ in range(3)]
    make_ranking(db, tasks[0], human, [[c] for c in tasks[0].completion_ids])  # complete: still judged
    judge = set_judge(db, project, model_path=str(tiny_judge_dir), orders=2)

    result = judging.run(new_run(db, judge), session=unit)

    run = fresh(db, JudgeRun, result["run_id"])
    assert run.status == "done" and run.task_ids == 3 and run.error_message is None
    assert run.judged + run.undecided == 3 and run.unparseable == 0  # constrained scoring always parses
    stored = ai_rankings(db, judge.user_id)
    assert len(stored) == run.judged
    for ranking in stored:
        task = fresh(db, RankingTask, ranking.task_id)
        assert sorted(c for g in ranking.groups for c in g) == sorted(task.completion_ids)
        assert ranking.assignment_id is None and ranking.pairs  # its pairs, as a human's ranking
    # Compare only: no slot taken, no count changed.
    assert [task_counts(db, t.id) for t in tasks] == [(1, 1, "complete"), (0, 0, "open"), (0, 0, "open")]
    account = db.get_one(User, judge.user_id)
    assert (account.role, account.is_active, account.display_name) == (AI_ROLE, False, "tiny v1 (AI)")
    # A second run finds everything judged and stores nothing twice.
    again = judging.run(new_run(db, judge), session=unit)
    assert again["already"] == 3 and len(ai_rankings(db, judge.user_id)) == run.judged


def test_the_endpoint_judge_stores_the_combined_ranking(db, unit, monkeypatch, caplog):
    monkeypatch.setenv("RANKLAB_JUDGE_TEST_KEY", TEST_API_KEY)
    project = make_project(db)
    task = make_task(db, project, texts=TEXTS, prompt_text="secret prompt words")
    with OpenAIServer(model_name="judge-model", api_key=TEST_API_KEY, reply=_best_first) as server:
        judge = set_judge(
            db,
            project,
            kind="endpoint",
            endpoint_url=server.url,
            endpoint_model="judge-model",
            api_key_env="RANKLAB_JUDGE_TEST_KEY",
        )
        with caplog.at_level(logging.DEBUG):
            result = judging.run(new_run(db, judge), session=unit)
        seen = list(server.requests)
    assert result["judged"] == 1
    (ranking,) = ai_rankings(db, judge.user_id)
    assert ranking.groups == _right(task)
    # Both presentation orders were asked, with the key from the environment.
    assert len(seen) == 2 and all(r.authorization == f"Bearer {TEST_API_KEY}" for r in seen)
    first, second = (r.body["messages"][0]["content"] for r in seen)
    assert first.index("\nok") < first.index("\nbad") and second.index("\nbad") < second.index("\nok")
    # The key is stored nowhere and, like the prompt, never logged.
    row = fresh(db, Judge, judge.id)
    assert TEST_API_KEY not in repr([getattr(row, c.name) for c in Judge.__table__.columns])
    assert TEST_API_KEY not in caplog.text and "secret prompt words" not in caplog.text


def test_slot_mode_fills_a_free_slot_and_never_displaces_a_human(db, unit):
    project = make_project(db, overlap=2)
    humans = [make_user(db, projects=[project]) for _ in range(3)]
    full = make_task(db, project, texts=TEXTS)  # will hold one ranking and one live lease
    free = make_task(db, project, texts=TEXTS)  # one ranking, one free slot
    for task in (full, free):
        make_ranking(db, task, humans[0], _right(task))
    lease = handout.lease_next_task(
        db, user_id=humans[1].id, project_id=project.id, overlap=2, lease_minutes=30, sweep_every=1e9
    )
    db.commit()
    assert lease is not None and lease.task_id == full.id  # the oldest task with a free slot
    with OpenAIServer(model_name="j", reply=_best_first) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j", mode="slot")
        result = judging.run(new_run(db, judge), session=unit)

    assert (result["judged"], result["no_slot"]) == (1, 1)
    assert verdicts(db, judge.user_id) == {free.id: "stored", full.id: "no_slot"}
    assert task_counts(db, free.id) == (2, 2, "complete")  # the judge's ranking completed it
    assert task_counts(db, full.id) == (2, 1, "open")  # the human's lease is untouched
    (ranking,) = ai_rankings(db, judge.user_id)
    assert ranking.task_id == free.id and ranking.assignment_id is not None
    assert db.get_one(Assignment, ranking.assignment_id).state == "submitted"
    # The third labeler is offered neither task: one is complete, the other's slots are held.
    nothing = handout.lease_next_task(
        db, user_id=humans[2].id, project_id=project.id, overlap=2, lease_minutes=30, sweep_every=1e9
    )
    assert nothing is None


def _down_after(server: OpenAIServer, good: int):
    """A reply that answers `good` requests, then plans a 500 for every later one (the endpoint
    went down): the failures are the server's own HTTP answers."""
    seen = {"n": 0}

    def reply(messages, i):
        seen["n"] += 1
        if seen["n"] == good:
            server.fail_next(500, times=1000)
        return _best_first(messages, i)

    return reply


def test_an_endpoint_that_stays_down_fails_the_run_and_stores_nothing_half(db, unit):
    project = make_project(db)
    tasks = [make_task(db, project, texts=TEXTS) for _ in range(3)]
    with OpenAIServer(model_name="j") as server:
        server.reply = _down_after(server, good=3)  # task 1: both orders; task 2: its first order only
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j", max_attempts=3)
        run_id = new_run(db, judge)
        with pytest.raises(judging.EndpointDown, match="did not answer after 3 tries"):
            judging.run(run_id, session=unit, backoff_seconds=0.01)
    run = fresh(db, JudgeRun, run_id)
    assert run.status == "failed" and "did not answer after 3 tries (HTTP 500)" in run.error_message
    assert verdicts(db, judge.user_id) == {tasks[0].id: "stored"}  # task 2 was half-asked: nothing of it
    assert [r.task_id for r in ai_rankings(db, judge.user_id)] == [tasks[0].id]
    assert task_counts(db, tasks[1].id) == (0, 0, "open")
    assert run.judged == 1


def test_an_endpoint_that_refuses_connections_fails_the_run_at_once(db, unit):
    project = make_project(db)
    make_task(db, project, texts=TEXTS)
    server = OpenAIServer(model_name="j").start()
    url = server.url
    server.stop()
    judge = set_judge(db, project, kind="endpoint", endpoint_url=url, endpoint_model="j", max_attempts=2)
    run_id = new_run(db, judge)
    with pytest.raises(judging.EndpointDown):
        judging.run(run_id, session=unit, backoff_seconds=0.01)
    run = fresh(db, JudgeRun, run_id)
    assert run.status == "failed" and "ConnectError" in run.error_message and url in run.error_message
    assert ai_rankings(db, judge.user_id) == [] and verdicts(db, judge.user_id) == {}


def test_retries_rate_limits_and_unparseable_or_position_biased_answers(db, unit):
    project = make_project(db)
    chatty, biased, fine = (
        make_task(db, project, texts=TEXTS, prompt_text=f"{name} task") for name in ("chatty", "biased", "fine")
    )

    def reply(messages, i):
        text = messages[-1]["content"]
        if "chatty task" in text:
            return "These answers are all fine, I cannot choose."
        if "biased task" in text:
            return "Ranking: 1 > 2 > 3 > 4"  # whatever is shown first wins
        return _best_first(messages, i)

    with OpenAIServer(model_name="j", reply=reply) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j", max_attempts=3)
        server.fail_next(429, retry_after=0.05)
        run_id = new_run(db, judge)
        judging.run(run_id, session=unit, backoff_seconds=0.01)
    run = fresh(db, JudgeRun, run_id)
    assert (run.unparseable, run.undecided, run.judged) == (1, 1, 1)
    assert verdicts(db, judge.user_id) == {chatty.id: "unparseable", biased.id: "undecided", fine.id: "stored"}
    assert [r.task_id for r in ai_rankings(db, judge.user_id)] == [fine.id]
    assert run.retries == 1  # the 429, asked again after its Retry-After
    assert run.calls == 1 + 3 + 2 + 2  # the 429; three chatty answers, then skipped; two orders for each other task


def test_suggestions_are_hidden_unless_the_project_turns_them_on(db, unit, tiny_judge_dir):
    project = make_project(db)
    task = make_task(db, project)
    judge = set_judge(db, project, model_path=str(tiny_judge_dir), orders=1)
    judging.run(new_run(db, judge), session=unit)
    (ranking,) = ai_rankings(db, judge.user_id)
    assert service.suggestion(db, project_id=project.id, task_id=task.id) is None  # off by default
    set_judge(db, project, model_path=str(tiny_judge_dir), orders=1, show_suggestion=True)
    assert service.suggestion(db, project_id=project.id, task_id=task.id) == ranking.groups
    assert fresh(db, Judge, judge.id).version == 1  # showing suggestions changes no judgment: same version


def test_agreement_of_the_judge_beside_human_agreement(db, unit):
    project = make_project(db, overlap=2)
    humans = [make_user(db, projects=[project]) for _ in range(2)]
    tasks = [make_task(db, project, texts=TEXTS) for _ in range(2)]
    for task in tasks:
        right = _right(task)
        make_ranking(db, task, humans[0], right)
        make_ranking(db, task, humans[1], [right[1], right[0], right[2], right[3]])  # one pair of six differs
    with OpenAIServer(model_name="j", reply=_best_first) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j")
        judging.run(new_run(db, judge), session=unit)
    result = judge_agreement.agreement(db, project_id=project.id)
    assert result.human.comparisons == 2 and result.human.agreement_pct == pytest.approx(500 / 6)
    # The judge agrees wholly with humans[0] and on 5 of 6 pairs with humans[1], on each task.
    assert result.judge.comparisons == 4 and result.judge.agreement_pct == pytest.approx(100 * 22 / 24)
    assert result.instructgpt_pct == 72.6


def test_a_new_judge_version_gets_its_own_ai_account(db):
    project = make_project(db)
    first = set_judge(db, project, name="critic")
    first_user = first.user_id
    second = set_judge(db, project, name="critic", orders=3)
    assert second.version == 2 and second.user_id != first_user
    assert db.get_one(User, second.user_id).display_name == "critic v2 (AI)"
    assert db.get_one(User, first_user).display_name == "critic v1 (AI)"
    assert db.scalar(select(User.role).where(User.id == first_user)) == AI_ROLE


def test_a_pairwise_project_gets_verdicts_and_position_bias_stores_nothing(db, unit):
    project = make_project(db, k_min=2, k_max=2, feedback_form="pairwise")
    humans = [make_user(db, projects=[project]) for _ in range(2)]
    clear, biased = (
        make_task(db, project, texts=t, prompt_text=p)
        for t, p in ((["bad", "best"], "clear"), (["ok", "good"], "biased"))
    )
    for task in (clear, biased):
        task.kind = "pairwise"
    db.commit()
    make_ranking(db, clear, humans[0], [[clear.completion_ids[1]], [clear.completion_ids[0]]])  # B wins
    make_ranking(db, clear, humans[1], [clear.completion_ids])  # a tie

    def reply(messages, i):
        return "Ranking: 1 > 2" if "biased" in messages[-1]["content"] else _best_first(messages, i)

    with OpenAIServer(model_name="j", reply=reply) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="j")
        judging.run(new_run(db, judge), session=unit)
    assert verdicts(db, judge.user_id) == {clear.id: "stored", biased.id: "undecided"}
    (ranking,) = ai_rankings(db, judge.user_id)
    assert ranking.groups == [[clear.completion_ids[1]], [clear.completion_ids[0]]]
    result = judge_agreement.agreement(db, project_id=project.id)
    assert (result.judge.comparisons, result.judge.agreement_pct) == (2, 50.0)  # agrees with one human of two
    assert (result.human.comparisons, result.human.agreement_pct) == (1, 0.0)


def test_the_local_pointwise_judge_stores_an_order_free_ranking(db, unit, tiny_judge_dir):
    project = make_project(db)
    task = make_task(db, project, texts=["good", "bad", "great", "poor"])  # words the tiny tokenizer knows
    judge = set_judge(db, project, kind="local_pointwise", model_path=str(tiny_judge_dir))
    result = judging.run(new_run(db, judge), session=unit)
    assert result["judged"] == 1
    (ranking,) = ai_rankings(db, judge.user_id)
    assert sorted(c for group in ranking.groups for c in group) == sorted(task.completion_ids)
    assert len(ranking.groups) == 4  # four different answers, four different scores: a strict order


def test_the_rate_limit_spaces_endpoint_calls_and_a_wrong_key_fails_at_once():
    import time

    with OpenAIServer(model_name="j", api_key="sk-right", reply=lambda m, i: "Ranking: 1 > 2") as server:
        client = judging.EndpointJudge(url=server.url, model="j", api_key="sk-right", requests_per_minute=600)
        started = time.monotonic()
        answers = [client.ask("which?") for _ in range(3)]
        assert answers == ["Ranking: 1 > 2"] * 3 and time.monotonic() - started >= 0.2  # 0.1 s apart
        client.close()
        wrong = judging.EndpointJudge(url=server.url, model="j", api_key="sk-wrong", max_attempts=4, sleep=_no_sleep)
        with pytest.raises(judging.EndpointDown, match="refused the request \\(HTTP 401") as refused:
            wrong.ask("which?")
        assert wrong.calls == 1 and "sk-wrong" not in str(refused.value)  # no retry of a 401; key not echoed


def _no_sleep(_seconds: float) -> None:
    raise AssertionError("a refused request is not retried")
