"""demonstrations: labeler-written (or uploaded) ideal answers, and their review

New table `demonstrations`; projects gain `demonstration_review` (off for existing projects);
ranking_tasks gain `demonstration_id`, set on demonstration_review tasks. Existing rows are
unchanged: every existing task keeps its kind.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models._types import JSONType, UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "demonstrations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("prompt_id", sa.Integer(), sa.ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("ranking_tasks.id", ondelete="SET NULL"), nullable=True),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("assignments.id", ondelete="SET NULL"), nullable=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("response_html", sa.Text(), nullable=False),
        sa.Column(
            "draft_completion_id", sa.Integer(), sa.ForeignKey("completions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("edit_distance", sa.Integer(), nullable=True),
        sa.Column("time_spent_ms", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reviewed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=False),
        sa.Column("reviewed_response", sa.Text(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("meta", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "external_id"),
        sa.UniqueConstraint("task_id", "user_id"),
    )
    op.create_index("ix_demonstrations_project_status", "demonstrations", ["project_id", "status", "id"])
    op.create_index("ix_demonstrations_prompt_id", "demonstrations", ["prompt_id"])
    op.create_index("ix_demonstrations_task_id", "demonstrations", ["task_id"])
    op.create_index("ix_demonstrations_user_id", "demonstrations", ["user_id"])
    # The labeler's "done" count is their submitted assignments now that not every answer is a
    # ranking: an index-only count, as rankings(user_id, project_id) gave before (0003).
    op.create_index("ix_assignments_user_project_state", "assignments", ["user_id", "project_id", "state"])
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("demonstration_review", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("demonstration_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_ranking_tasks_demonstration_id_demonstrations",
            "demonstrations",
            ["demonstration_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index("ix_ranking_tasks_demonstration_id", ["demonstration_id"])


def downgrade() -> None:
    # Review tasks point into the table dropped below. Demonstration tasks keep their rows (and
    # kind) so that upgrading again restores the queue; the older code does not hand them out.
    op.execute("DELETE FROM ranking_tasks WHERE demonstration_id IS NOT NULL")
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_ranking_tasks_demonstration_id")
        batch_op.drop_constraint("fk_ranking_tasks_demonstration_id_demonstrations", type_="foreignkey")
        batch_op.drop_column("demonstration_id")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("demonstration_review")
    op.drop_table("demonstrations")
    op.drop_index("ix_assignments_user_project_state", table_name="assignments")
