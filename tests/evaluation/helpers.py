"""Rows for the evaluation tests, made directly (no worker): eval prompts, model versions, their
eval completions as GENERATE_EVAL would store them, and judgments as labelers submit them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.evaluation import service
from app.models import (
    Completion,
    CompletionScore,
    Evaluation,
    ModelVersion,
    Project,
    Prompt,
    RankingTask,
    User,
    VersionEval,
)
from tests.factories import make_project, make_ranking, make_user
from tests.rounds.helpers import make_round, make_version

SEED = 1234


def add_prompts(db: Session, project: Project, n: int, *, split: str = "eval", prefix: str = "e") -> list[Prompt]:
    start = db.query(Prompt).filter(Prompt.project_id == project.id).count()
    prompts = [
        Prompt(
            project_id=project.id,
            external_id=f"{prefix}{start + i}",
            text=f"Question {prefix}{start + i}?",
            split=split,
        )
        for i in range(n)
    ]
    db.add_all(prompts)
    db.commit()
    return prompts


def add_eval_completions(db: Session, version: ModelVersion, prompts: list[Prompt], *, seed: int = SEED) -> None:
    """What the worker stores: one completion per eval prompt, purpose "eval" and the seed."""
    db.add_all(
        Completion(
            prompt_id=p.id,
            text=f"answer of {version.kind} #{version.id} to {p.external_id}",
            source="model",
            model_version_id=version.id,
            generation_params={"purpose": "eval", "seed": seed, "temperature": 0.7},
        )
        for p in prompts
    )
    db.commit()


@dataclass
class Setup:
    project: Project
    base: ModelVersion
    policy: ModelVersion
    prompts: list[Prompt]
    labelers: list[User]


def setup(db: Session, *, prompts: int = 3, overlap: int = 1, labelers: int = 2) -> Setup:
    """A project with eval prompts, a base and a round-0 policy trained from it, both answered."""
    project = make_project(db, overlap=overlap)
    people = [make_user(db, projects=[project]) for _ in range(labelers)]
    eval_prompts = add_prompts(db, project, prompts)
    base = make_version(db, project, kind="base", name="base")
    training_round = make_round(db, project, number=0, status="done", policy_in_id=base.id)
    policy = make_version(db, project, kind="policy", name="policy r0", parent=base, training_round=training_round)
    training_round.policy_out_id = policy.id
    db.commit()
    for version in (base, policy):
        add_eval_completions(db, version, eval_prompts)
    return Setup(project, base, policy, eval_prompts, people)


def opened(db: Session, s: Setup, versions: list[ModelVersion] | None = None) -> Evaluation:
    """An evaluation launched and opened for labeling, as the worker would leave it."""
    versions = versions or [s.policy, s.base]
    evaluation = service.launch(
        db, project_id=s.project.id, version_ids=[v.id for v in versions], prompts=len(s.prompts), seed=SEED
    )
    db.commit()
    service.open_for_labeling(db, evaluation)
    db.commit()
    return evaluation


def judge(
    db: Session, task: RankingTask, user: User, verdict: str, *, winner_version: int | None = None, comment: str = ""
) -> None:
    """A labeler's verdict: "win" for the completion of `winner_version`, "tie" or "both_bad"."""
    first, second = task.completion_ids
    if verdict == "win":
        by_version = {item.completion.model_version_id: item.completion_id for item in task.items}
        win = by_version[winner_version]
        lose = second if win == first else first
        make_ranking(db, task, user, [[win], [lose]], comment=comment)
    else:
        make_ranking(db, task, user, [[first, second]], none_acceptable=verdict == "both_bad", comment=comment)


def add_evaluation_sample(
    db: Session, project: Project, *, base: ModelVersion, policy: ModelVersion, reward: ModelVersion, judges: list[User]
) -> Evaluation:
    """Issue 12's rows, for the tests that need every table filled (backups, migrations): answers
    of both versions to two eval prompts, an evaluation opened by its service (two pairwise_eval
    tasks), the first judge's win with a reason and, with a second judge, a "both bad", the reward
    model's scores of the judged answers and the policy's eval metrics (1/3: a float that must
    survive a round trip exactly)."""
    prompts = add_prompts(db, project, 2)
    for version in (base, policy):
        add_eval_completions(db, version, prompts)
    # The row service.launch stores, without its GENERATE_EVAL message (these sessions name no broker).
    evaluation = Evaluation(
        project_id=project.id,
        name="policy vs base ✓",
        status="generating",
        version_ids=[policy.id, base.id],
        comparisons=[[policy.id, base.id]],
        config={"prompts": 2, "prompt_ids": [p.id for p in prompts], "seed": SEED},
    )
    db.add(evaluation)
    db.commit()
    service.open_for_labeling(db, evaluation)
    db.commit()
    tasks = db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id).order_by(RankingTask.id))
    for task, judge_, verdict in zip(tasks, judges, ("win", "both_bad"), strict=False):
        first, second = task.completion_ids
        if verdict == "win":
            make_ranking(db, task, judge_, [[second], [first]], comment="B reads better")
        else:
            make_ranking(db, task, judge_, [[first, second]], none_acceptable=True)
        db.add_all(
            CompletionScore(completion_id=c, reward_model_id=reward.id, score=-0.5 + i)
            for i, c in enumerate(task.completion_ids)
        )
    db.add(
        VersionEval(
            project_id=project.id,
            version_id=policy.id,
            reward_model_id=reward.id,
            round_id=policy.round_id,
            metrics={"rm_score": 0.5, "mean_tokens": 12.5, "distinct_2": 1 / 3, "lc_win_rate_vs_previous": 0.6},
            prompts=2,
        )
    )
    db.commit()
    return evaluation
