"""GENERATE_EVAL through a real Celery worker: an evaluation an admin launched over REST gets each
version's missing eval answers (fixed seed, one per prompt) and opens for labeling; an answer a
version already has is reused; a version that cannot load fails the evaluation with the message.
No training round is needed: the versions are model folders (tiny random models)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.models import Completion, ModelVersion, RankingTask
from tests.loop.eval_checks import EVAL_PROMPTS, upload_eval_prompts
from tests.loop.helpers import Api, wait_for


def _version(db, project, kind: str, path: str, name: str) -> int:
    row = ModelVersion(
        project_id=project.id, kind=kind, name=name, base_model=path, artifact_path=path, config={}, metrics={}
    )
    db.add(row)
    db.commit()
    return row.id


def _evaluation(api: Api, evaluation_id: int, status: str, worker) -> dict:
    def reached():
        data = api.get(f"/api/v1/evaluations/{evaluation_id}")
        return data if data["status"] == status else None

    return wait_for(reached, timeout=180, what=f"evaluation {evaluation_id} to be {status}", worker=worker)


def test_generate_eval_writes_missing_answers_then_opens_labeling(
    db, client, admin_token, loop_project, tiny_model_dir, tmp_path, start_worker
):
    from worker.ml.tiny import save_tiny_model

    project, _labelers = loop_project
    api = Api(client, admin_token)
    upload_eval_prompts(api, project.id)
    other = tmp_path / "other-model"
    save_tiny_model(other, seed=1)
    base = _version(db, project, "base", str(tiny_model_dir), "tiny base")
    policy = _version(db, project, "policy", str(other), "tiny policy")
    worker = start_worker()

    launched = api.post(
        f"/api/v1/projects/{project.id}/evaluations", {"version_ids": [policy, base], "seed": 5}, expect=201
    )
    assert launched["status"] == "generating"
    done = _evaluation(api, launched["id"], "labeling", worker)
    assert done["error_message"] is None
    db.rollback()
    answers = db.scalars(select(Completion).where(Completion.model_version_id.in_([base, policy]))).all()
    assert len(answers) == 2 * len(EVAL_PROMPTS)
    assert {(a.generation_params["purpose"], a.generation_params["seed"]) for a in answers} == {("eval", 5)}
    assert all(a.finish_reason in ("eos", "length") and a.text_html is not None for a in answers)
    tasks = db.scalar(select(func.count()).select_from(RankingTask).where(RankingTask.evaluation_id == done["id"]))
    assert tasks == len(EVAL_PROMPTS)

    # The same versions again with the same seed: nothing is generated, it opens at once.
    again = api.post(
        f"/api/v1/projects/{project.id}/evaluations", {"version_ids": [base, policy], "seed": 5}, expect=201
    )
    _evaluation(api, again["id"], "labeling", worker)
    db.rollback()
    assert db.scalar(
        select(func.count()).select_from(Completion).where(Completion.model_version_id.in_([base, policy]))
    ) == 2 * len(EVAL_PROMPTS)

    # A version whose folder is gone fails the evaluation, with the reason.
    missing = _version(db, project, "policy", str(tmp_path / "deleted"), "deleted policy")
    broken = api.post(
        f"/api/v1/projects/{project.id}/evaluations", {"version_ids": [base, missing], "seed": 5}, expect=201
    )
    failed = _evaluation(api, broken["id"], "failed", worker)
    assert "deleted" in failed["error_message"]
