"""evaluations: blind pairwise evaluations, per-RM completion scores, per-version eval metrics

ranking_tasks gains `kind` (the task type; existing rows are "ranking") and `evaluation_id`.
Prompts may now carry split "eval" (a string column: no schema change).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 16:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models._types import JSONType, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("training_rounds.id", ondelete="SET NULL"), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version_ids", JSONType, nullable=False),
        sa.Column("comparisons", JSONType, nullable=False),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_evaluations_project_id", "evaluations", ["project_id"])
    op.create_index("ix_evaluations_round_id", "evaluations", ["round_id"])
    op.create_table(
        "completion_scores",
        sa.Column("completion_id", sa.Integer(), sa.ForeignKey("completions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "reward_model_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index("ix_completion_scores_reward_model_id", "completion_scores", ["reward_model_id"])
    op.create_table(
        "version_evals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "reward_model_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("round_id", sa.Integer(), sa.ForeignKey("training_rounds.id", ondelete="SET NULL"), nullable=True),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("prompts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("version_id", "reward_model_id"),
    )
    op.create_index("ix_version_evals_project", "version_evals", ["project_id", "id"])
    op.create_index("ix_version_evals_version_id", "version_evals", ["version_id"])
    op.create_index("ix_version_evals_round_id", "version_evals", ["round_id"])
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(24), nullable=False, server_default="ranking"))
        batch_op.add_column(sa.Column("evaluation_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_ranking_tasks_evaluation_id_evaluations", "evaluations", ["evaluation_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_ranking_tasks_evaluation_id", ["evaluation_id"])


def downgrade() -> None:
    # Evaluation tasks (and their assignments and judgments) cannot exist without their evaluation.
    op.execute("DELETE FROM ranking_tasks WHERE evaluation_id IS NOT NULL")
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_ranking_tasks_evaluation_id")
        batch_op.drop_constraint("fk_ranking_tasks_evaluation_id_evaluations", type_="foreignkey")
        batch_op.drop_column("evaluation_id")
        batch_op.drop_column("kind")
    op.drop_table("version_evals")
    op.drop_table("completion_scores")
    op.drop_table("evaluations")
