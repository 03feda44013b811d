"""judges: AI judges per project, their runs and per-task verdicts (issue 16)

New tables only: `judges` (one per project), `judge_runs`, `judge_verdicts`. The judges' rankings
are ordinary `rankings` rows by AI labeler accounts (users.role "ai"); no existing row changes.
Downgrading drops the three tables; the AI accounts and their rankings stay (ordinary rows).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models._types import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(target: str, ondelete: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "judges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), _fk("projects.id", "CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=False),
        sa.Column("endpoint_url", sa.Text(), nullable=False),
        sa.Column("endpoint_model", sa.String(200), nullable=False),
        sa.Column("api_key_env", sa.String(100), nullable=False),
        sa.Column("prompt_template", sa.Text(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("show_suggestion", sa.Boolean(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("requests_per_minute", sa.Float(), nullable=False),
        sa.Column("user_id", sa.Integer(), _fk("users.id", "SET NULL"), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id"),
    )
    op.create_table(
        "judge_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("judge_id", sa.Integer(), _fk("judges.id", "CASCADE"), nullable=False),
        sa.Column("project_id", sa.Integer(), _fk("projects.id", "CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), _fk("users.id", "SET NULL"), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("task_ids", "judged", "unparseable", "undecided", "no_slot", "already", "calls", "retries")
        ),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_judge_runs_judge_id", "judge_runs", ["judge_id"])
    op.create_index("ix_judge_runs_project_id", "judge_runs", ["project_id"])
    op.create_table(
        "judge_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), _fk("judge_runs.id", "CASCADE"), nullable=False),
        sa.Column("task_id", sa.Integer(), _fk("ranking_tasks.id", "CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), _fk("users.id", "CASCADE"), nullable=False),
        sa.Column("ranking_id", sa.Integer(), _fk("rankings.id", "CASCADE"), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("orders", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", "user_id"),
    )
    op.create_index("ix_judge_verdicts_run_id", "judge_verdicts", ["run_id"])
    op.create_index("ix_judge_verdicts_task_id", "judge_verdicts", ["task_id"])
    op.create_index("ix_judge_verdicts_ranking_id", "judge_verdicts", ["ranking_id"])


def downgrade() -> None:
    op.drop_table("judge_verdicts")
    op.drop_table("judge_runs")
    op.drop_table("judges")
