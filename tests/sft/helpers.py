"""Demonstrations and finished SFT jobs written directly (no worker), each committed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.models import ModelVersion, Project, Prompt, User
from app.models.demonstrations import Demonstration
from app.models.jobs import JobDemonstration, JobEvent, TrainingJob
from app.sft.schemas import SFTRunIn

# A synthetic mapping a tiny model can pick up in a few steps: the answer repeats a word of the prompt.
WORDS = "cat dog bird fish tree sun moon star".split()


def add_demonstrations(
    db: Session,
    project: Project,
    n: int,
    *,
    author: User | None = None,
    status: str = "accepted",
    source: str = "labeler",
    created_at: datetime | None = None,
    tag: str = "d",
) -> list[Demonstration]:
    rows = []
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        prompt = Prompt(project_id=project.id, external_id=f"{tag}{i}-{datetime.now().timestamp()}", text=f"say {word}")
        db.add(prompt)
        db.flush()
        demo = Demonstration(
            project_id=project.id,
            prompt_id=prompt.id,
            user_id=author.id if author is not None and source == "labeler" else None,
            response=f"{word} {word}",
            response_html=f"<p>{word} {word}</p>",
            status=status,
            source=source,
            meta={},
        )
        if created_at is not None:
            demo.created_at = created_at
        db.add(demo)
        rows.append(demo)
    db.commit()
    return rows


def populate_jobs(
    db: Session,
    project: Project,
    *,
    start: ModelVersion,
    admin: User | None = None,
    artifact_path: str | None = "/nowhere/sft",
) -> TrainingJob:
    """A finished SFT job with its model version, a metric event and lineage to every demonstration
    of the project (tests/test_migrations.py fills the job tables with it)."""
    demos = db.query(Demonstration).filter(Demonstration.project_id == project.id).all()
    job = TrainingJob(
        project_id=project.id,
        kind="sft",
        status="done",
        config=SFTRunIn().model_dump(mode="json"),
        start_model_id=start.id,
        current_step="done",
        progress=1.0,
        metrics={"train_loss": 1.5},
        created_by_id=admin.id if admin is not None else None,
    )
    db.add(job)
    db.flush()
    version = ModelVersion(
        project_id=project.id,
        kind="sft",
        name="SFT job",
        base_model=start.base_model,
        parent_id=start.id,
        job_id=job.id,
        artifact_path=artifact_path,
        config={},
        metrics={"train_loss": 1.5},
    )
    db.add(version)
    db.flush()
    job.result_model_id = version.id
    db.add(JobEvent(job_id=job.id, kind="metric", step=1, data={"loss": 1.5}, message=""))
    db.add_all(JobDemonstration(job_id=job.id, demonstration_id=d.id) for d in demos)
    db.commit()
    return job
