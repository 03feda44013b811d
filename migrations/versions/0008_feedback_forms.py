"""feedback_forms: pairwise, Likert, multi-aspect and good/bad forms, and per-completion critiques

projects gain `feedback_form` ("ranking" for existing projects) and `form_settings` ({}); their
k_range check widens to 1–9 (each form sets its own range in the app: ranking 4–9, pairwise 2).
rankings gain `critiques` ({} for existing rankings). New tables `feedback` (one rating-form
answer) and `feedback_ratings` (its values per completion and aspect). Existing rows are unchanged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models._types import JSONType, UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_K_RANGE = "k_min >= 4 AND k_max <= 9 AND k_min <= k_max"
NEW_K_RANGE = "k_min >= 1 AND k_max <= 9 AND k_min <= k_max"


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback_form", sa.String(16), nullable=False, server_default="ranking"))
        batch_op.add_column(sa.Column("form_settings", JSONType, nullable=False, server_default="{}"))
        batch_op.drop_constraint(op.f("ck_projects_k_range"), type_="check")
        batch_op.create_check_constraint("k_range", NEW_K_RANGE)
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("critiques", JSONType, nullable=False, server_default="{}"))
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("ranking_tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("assignments.id", ondelete="SET NULL"), nullable=True),
        sa.Column("form", sa.String(16), nullable=False),
        sa.Column("settings", JSONType, nullable=False),
        sa.Column("display_order", JSONType, nullable=False),
        sa.Column("time_spent_ms", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", "user_id"),
        sa.UniqueConstraint("assignment_id"),
    )
    op.create_index("ix_feedback_project_id", "feedback", ["project_id", "id"])
    op.create_index("ix_feedback_user_project", "feedback", ["user_id", "project_id"])
    op.create_table(
        "feedback_ratings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feedback_id", sa.Integer(), sa.ForeignKey("feedback.id", ondelete="CASCADE"), nullable=False),
        sa.Column("completion_id", sa.Integer(), sa.ForeignKey("completions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("aspect", sa.String(32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=True),
        sa.Column("critique", sa.Text(), nullable=True),
        sa.UniqueConstraint("feedback_id", "completion_id", "aspect"),
    )
    op.create_index("ix_feedback_ratings_completion_id", "feedback_ratings", ["completion_id"])


def downgrade() -> None:
    # Rating-form answers have no place in the older schema and go; their tasks keep their rows
    # (and kind), which the older code does not hand out. Projects whose form allowed fewer than 4
    # completions per task are widened to the old 4–9 check (their tasks are kept as they are).
    op.drop_table("feedback_ratings")
    op.drop_table("feedback")
    with op.batch_alter_table("rankings", schema=None) as batch_op:
        batch_op.drop_column("critiques")
    op.execute("UPDATE projects SET k_max = 4 WHERE k_max < 4")
    op.execute("UPDATE projects SET k_min = 4 WHERE k_min < 4")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_projects_k_range"), type_="check")
        batch_op.create_check_constraint("k_range", OLD_K_RANGE)
        batch_op.drop_column("form_settings")
        batch_op.drop_column("feedback_form")
