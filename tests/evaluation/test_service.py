"""The evaluation service on both databases: the eval set, launch's refusals, opening the
pairwise tasks (idempotently), presets, close and cancel. No worker: completions are made as
GENERATE_EVAL would store them, then open_for_labeling is called as it would."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.evaluation import service
from app.models import Evaluation, Prompt, RankingTask, TaskStatus
from app.rounds import lifecycle, queue
from tests.evaluation.helpers import SEED, add_eval_completions, add_prompts, opened, setup
from tests.factories import make_project, make_task
from tests.rounds.helpers import make_round, make_version
from worker.celery_app import GENERATE_EVAL


def test_launch_stores_a_generating_evaluation_and_enqueues_generation_after_commit(db):
    s = setup(db)
    evaluation = service.launch(db, project_id=s.project.id, version_ids=[s.policy.id, s.base.id], prompts=2, seed=7)
    assert [(m.name, m.args) for m in queue.pending(db)] == [(GENERATE_EVAL, (evaluation.id,))]
    db.commit()
    stored = db.get(Evaluation, evaluation.id)
    assert stored.status == "generating" and stored.comparisons == [[s.policy.id, s.base.id]]
    assert stored.config == {"prompts": 2, "prompt_ids": [p.id for p in s.prompts[:2]], "seed": 7}
    assert stored.name == f"policy #{s.policy.id} vs base #{s.base.id}"


def test_launch_compares_every_pair_unless_told(db):
    s = setup(db)
    sft = make_version(db, s.project, kind="sft", name="sft")
    ids = [s.policy.id, s.base.id, sft.id]
    every = service.launch(db, project_id=s.project.id, version_ids=ids, check_queue=False)
    assert every.comparisons == [[ids[0], ids[1]], [ids[0], ids[2]], [ids[1], ids[2]]]
    chosen = service.launch(
        db,
        project_id=s.project.id,
        version_ids=ids,
        comparisons=[[ids[0], ids[2]], [ids[2], ids[0]]],
        check_queue=False,
    )
    assert chosen.comparisons == [[ids[0], ids[2]]]  # the same pair twice is one comparison


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        ("one version", "version_ids", "at least two different"),
        ("same version twice", "version_ids", "at least two different"),
        ("unknown version", "version_ids", "no model version 999999"),
        ("another project's version", "version_ids", "belongs to another project"),
        ("a reward model", "version_ids", "writes no answers"),
        ("pair outside the versions", "comparisons[0]", "not one of version_ids"),
        ("no eval prompts", "prompts", "no eval prompts"),
    ],
)
def test_launch_refuses_bad_input_naming_the_field(db, case, field, words):
    s = setup(db)
    ids = [s.policy.id, s.base.id]
    comparisons = None
    project_id = s.project.id
    if case == "one version":
        ids = [s.policy.id]
    elif case == "same version twice":
        ids = [s.policy.id, s.policy.id]
    elif case == "unknown version":
        ids = [s.policy.id, 999999]
    elif case == "another project's version":
        ids = [s.policy.id, make_version(db, make_project(db), kind="base").id]
    elif case == "a reward model":
        ids = [s.policy.id, make_version(db, s.project, kind="reward").id]
    elif case == "pair outside the versions":
        comparisons = [[s.policy.id, 999]]
    elif case == "no eval prompts":
        other = make_project(db)
        a, b = make_version(db, other, kind="base"), make_version(db, other, kind="policy")
        add_prompts(db, other, 2, split="train")
        project_id, ids = other.id, [a.id, b.id]
    with pytest.raises(service.EvaluationError) as refused:
        service.launch(db, project_id=project_id, version_ids=ids, comparisons=comparisons, check_queue=False)
    assert refused.value.field == field and words in refused.value.message and refused.value.status_code == 422
    assert queue.pending(db) == []


def test_open_for_labeling_makes_one_pairwise_task_per_prompt_and_pair_once(db):
    s = setup(db, prompts=4)
    sft = make_version(db, s.project, kind="sft", name="sft")
    add_eval_completions(db, sft, s.prompts)
    add_eval_completions(db, s.base, s.prompts, seed=SEED + 1)  # another seed's answers are not used
    evaluation = opened(db, s, [s.policy, s.base, sft])
    assert evaluation.status == "labeling"
    tasks = list(db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id)))
    assert len(tasks) == 4 * 3
    for task in tasks:
        assert task.kind == "pairwise_eval" and task.round_id is None and task.status == "open"
        params = [item.completion.generation_params for item in task.items]
        assert all(p["purpose"] == "eval" and p["seed"] == SEED for p in params)
    pairs = {(t.prompt_id, frozenset(i.completion.model_version_id for i in t.items)) for t in tasks}
    wanted = {(p.id, frozenset(pair)) for p in s.prompts for pair in evaluation.comparisons}
    assert pairs == wanted
    # Sides are seeded: some tasks show the first version first, some the second.
    firsts = {t.items[0].completion.model_version_id for t in tasks}
    assert len(firsts) > 1

    assert service.open_for_labeling(db, evaluation) == 0  # a second delivery makes nothing
    db.commit()
    again = db.scalars(select(RankingTask.id).where(RankingTask.evaluation_id == evaluation.id)).all()
    assert sorted(again) == sorted(t.id for t in tasks)
    # Eval tasks never count as a round's labeling, nor make prompts "used" for rounds.
    assert all(p.split == "eval" for p in db.scalars(select(Prompt).where(Prompt.id.in_([t.prompt_id for t in tasks]))))


def test_open_for_labeling_refuses_while_an_answer_is_missing(db):
    s = setup(db, prompts=2)
    late = make_version(db, s.project, kind="sft")
    add_eval_completions(db, late, s.prompts[:1])
    evaluation = service.launch(db, project_id=s.project.id, version_ids=[late.id, s.base.id], check_queue=False)
    db.commit()
    assert service.missing_completions(db, evaluation=evaluation) == {late.id: [s.prompts[1].id]}
    with pytest.raises(service.EvaluationConflict, match="missing"):
        service.open_for_labeling(db, evaluation)
    db.rollback()
    assert db.get(Evaluation, evaluation.id).status == "generating"


def test_hold_out_eval_set_moves_a_seeded_choice_of_unused_prompts_only(db):
    project = make_project(db)
    used = make_task(db, project)  # its prompt is used by a task
    free = add_prompts(db, project, 10, split="train", prefix="t")
    chosen = service.hold_out_eval_set(db, project_id=project.id, count=4, seed=3)
    db.commit()
    assert len(chosen) == 4 and used.prompt_id not in {p.id for p in chosen}
    assert {p.id for p in service.eval_prompts(db, project_id=project.id, limit=None)} == {p.id for p in chosen}
    left = lifecycle.unused_prompts(db, project_id=project.id, limit=None)
    assert {p.id for p in left} == {p.id for p in free} - {p.id for p in chosen}  # rounds never take eval prompts

    other = make_project(db)
    again = add_prompts(db, other, 10, split="train", prefix="t")
    same = service.hold_out_eval_set(db, project_id=other.id, count=4, seed=3)
    assert [again.index(p) for p in same] == [free.index(p) for p in chosen]  # same seed, same picks

    with pytest.raises(service.EvaluationError) as refused:
        service.hold_out_eval_set(db, project_id=project.id, count=7, seed=0)
    assert refused.value.field == "count" and "only 6 prompts" in refused.value.message


def test_presets_resolve_previous_base_and_sft(db):
    s = setup(db)
    r1 = make_round(db, s.project, number=1, status="done", policy_in_id=s.policy.id)
    newer = make_version(db, s.project, kind="policy", name="policy r1", parent=s.policy, training_round=r1)
    r1.policy_out_id = newer.id
    db.commit()
    assert service.versions_for_round(db, r1, ["previous", "base", "sft"]) == [
        [newer.id, s.policy.id],
        [newer.id, s.base.id],
    ]
    sft = make_version(db, s.project, kind="sft")
    assert service.versions_for_round(db, r1, ["sft", "previous"]) == [[newer.id, sft.id], [newer.id, s.policy.id]]
    assert service.preset_comparisons(
        db, project_id=s.project.id, version_id=s.policy.id, against=["previous", "base"]
    ) == [
        [s.policy.id, s.base.id]  # round 0's previous policy is the base: one comparison
    ]
    lonely = make_project(db)
    with pytest.raises(service.EvaluationError, match="no sft"):
        service.preset_comparisons(
            db, project_id=lonely.id, version_id=make_version(db, lonely, kind="base").id, against=["sft"]
        )


def test_close_and_cancel_withdraw_open_tasks_and_refuse_twice(db):
    s = setup(db, prompts=2)
    first = opened(db, s)
    service.close(db, evaluation=first)
    db.commit()
    statuses = set(db.scalars(select(RankingTask.status).where(RankingTask.evaluation_id == first.id)))
    assert first.status == "done" and first.finished_at is not None and statuses == {TaskStatus.retired}
    with pytest.raises(service.EvaluationConflict):
        service.close(db, evaluation=first)
    db.rollback()
    second = service.launch(db, project_id=s.project.id, version_ids=[s.policy.id, s.base.id], check_queue=False)
    db.commit()
    with pytest.raises(service.EvaluationConflict, match="only when labeling"):
        service.close(db, evaluation=second)
    db.rollback()
    assert service.cancel(db, evaluation=second).status == "cancelled"
    db.commit()
    with pytest.raises(service.EvaluationConflict):
        service.open_for_labeling(db, second)


def test_two_deliveries_opening_at_once_make_each_task_once(app, db, settings):
    """GENERATE_EVAL delivered twice, both finishing together: the evaluation row's lock (Postgres)
    or the write lock (SQLite) lets one make the tasks; the other finds them and makes none."""
    import threading

    from sqlalchemy.orm import sessionmaker

    s = setup(db, prompts=5)
    evaluation = service.launch(db, project_id=s.project.id, version_ids=[s.policy.id, s.base.id], check_queue=False)
    db.commit()
    sessions = sessionmaker(bind=app.state.write_sessionmaker.kw["bind"], expire_on_commit=False)
    made: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def deliver() -> None:
        with sessions() as session:
            try:
                start.wait()
                made.append(service.open_for_labeling(session, session.get(Evaluation, evaluation.id)))
                session.commit()
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and sorted(made) == [0, 5]
    db.rollback()
    db.expire_all()
    assert len(db.scalars(select(RankingTask.id).where(RankingTask.evaluation_id == evaluation.id)).all()) == 5
    assert db.get(Evaluation, evaluation.id).status == "labeling"
