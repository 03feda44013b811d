"""An SFT job: fine-tune the start model on the selected demonstrations, register the result.

The start model is any of the project's base, SFT or policy versions (an adapter folder is merged
into its base by worker.ml). The result is a ModelVersion(kind "sft", parent = the start model,
job_id = the job) whose lineage rows (job_demonstrations) name every demonstration it trained on;
both are written with `done` in one final transaction. A round can then start from it
(docs/sft-stage.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlalchemy import update

from app.models import ModelKind, ModelVersion
from app.models.jobs import JobDemonstration, TrainingJob
from app.sft import jobs, selection
from app.sft.jobs import J
from worker.loop import artifacts
from worker.loop.configs import VersionRef, distributed_config, version_path
from worker.loop.job_runtime import STALL_STEP, JobReporter, run_claimed
from worker.loop.runtime import db_session, settings


def run(job_id: int) -> dict[str, Any]:
    return run_claimed(job_id, lambda token: _train(job_id, token), fault_step=STALL_STEP)


def job_dir(project_id: int, job_id: int) -> Path:
    return settings().artifacts_dir / f"project-{project_id}" / "sft" / f"job-{job_id}"


def sft_config(settings_section: dict[str, Any], *, model: str, job_id: int):
    """The stored settings (app/sft/schemas.SFTSettings as JSON) → SFTConfig, field by field name."""
    from worker.ml.sft_config import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    same = {key: value for key, value in settings_section.items() if key in names}
    return SFTConfig.from_dict({**same, "model": model, "extra": {"job_id": job_id}})


def _train(job_id: int, token: str) -> dict[str, Any]:
    from worker.ml.distributed import launch_sft
    from worker.ml.sft import train_sft
    from worker.ml.vllm_engine import release_for_training

    # 1. Inputs, in a short read-only session: the start model and the demonstrations.
    with db_session(read_only=True) as db:
        job = db.get_one(TrainingJob, job_id)
        if job.start_model_id is None:
            raise ValueError("start_model_id: the job's start model was deleted; launch a new run")
        start = VersionRef.of(db.get_one(ModelVersion, job.start_model_id))
        demo_ids, data = selection.examples(db, project_id=job.project_id, selection=job.config["demonstrations"])
        project_id, config = job.project_id, job.config
    if not data:
        raise ValueError("demonstrations: the filter selects no demonstration any more")
    out = job_dir(project_id, job_id)
    artifacts.prepare(out)  # an unwritable or full artifact disk fails here, before any training
    release_for_training()  # this process's vLLM engine (if any) sleeps: training gets the GPU
    reporter = JobReporter(job_id, token)
    model = version_path(start.kind, start.base_model, start.artifact_path, reporter)
    cfg = sft_config(config.get("sft", {}), model=model, job_id=job_id)

    # 2. Train; the folder appears complete or not at all (worker.ml renames it into place).
    with artifacts.writing(out, "the SFT model"):
        dist = distributed_config()  # a worker owning N GPUs trains on all of them (DDP)
        if dist is None:
            metrics = train_sft(cfg, data, out, on_progress=reporter, on_step=reporter.point)
        else:
            metrics = launch_sft(cfg, data, out, dist, on_progress=reporter, on_step=reporter.point)
    # The per-step losses are in the metric events already; the summary keeps the rest.
    summary = {key: value for key, value in metrics.items() if key != "train_loss" and _plain(value)}
    summary["demonstrations"] = len(demo_ids)

    # 3. Register the model, its lineage and `done` together, only if this run still holds the job.
    with db_session() as db:
        if not jobs.transition(
            db,
            job_id=job_id,
            source=[J.running],
            target=J.done,
            progress=1.0,
            metrics=summary,
            current_step="done",
        ):
            db.rollback()
            return {"job_id": job_id, "skipped": "the job left running meanwhile"}
        version = ModelVersion(
            project_id=project_id,
            kind=ModelKind.sft,
            name=(config.get("name") or f"SFT job {job_id}")[:200],
            base_model=start.base_model,
            parent_id=start.id,
            job_id=job_id,
            artifact_path=str(out),
            config=cfg.to_dict(),
            metrics=summary,
        )
        db.add(version)
        db.flush()
        db.add_all(JobDemonstration(job_id=job_id, demonstration_id=demo_id) for demo_id in demo_ids)
        db.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(result_model_id=version.id))
        jobs.log_event(
            db,
            job_id=job_id,
            message=f"SFT model registered (version {version.id}) from {len(demo_ids)} demonstrations",
            data={key: summary[key] for key in ("train_loss", "eval_loss", "best_epoch") if key in summary},
        )
    return {"job_id": job_id, "model_version_id": version.id, **summary}


def _plain(value: Any) -> bool:
    """Metrics that fit in a JSON column (numbers, strings, lists of them)."""
    import math

    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
