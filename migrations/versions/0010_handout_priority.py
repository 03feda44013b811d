"""handout_priority: an active-learning order for the handout (issue 16 §2)

ranking_tasks gain `handout_priority` (NULL: not scored) and the index the prioritised handout
reads, highest first with NULLs last (Postgres needs NULLS LAST spelled out; SQLite sorts NULLs
last in DESC already and takes no NULLS clause in an index). projects gain `handout_order`
("default" for existing projects: the oldest open task first, as before) and what produced the
stored priorities: `priority_model_id` (a reward model version), `priority_method`,
`priorities_refreshed_at`, `priority_stats` ({}). Existing rows are unchanged; downgrading drops
the columns and the index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.models._types import JSONType, UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_ranking_tasks_priority"


def upgrade() -> None:
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handout_priority", sa.Float(), nullable=True))
    postgres = op.get_bind().dialect.name == "postgresql"
    priority = "handout_priority DESC NULLS LAST" if postgres else "handout_priority DESC"
    op.create_index(INDEX, "ranking_tasks", ["project_id", "status", sa.text(priority), "id"])
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handout_order", sa.String(16), nullable=False, server_default="default"))
        batch_op.add_column(sa.Column("priority_model_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("priority_method", sa.String(16), nullable=True))
        batch_op.add_column(sa.Column("priorities_refreshed_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("priority_stats", JSONType, nullable=False, server_default="{}"))
        batch_op.create_foreign_key(
            op.f("fk_projects_priority_model_id_model_versions"),
            "model_versions",
            ["priority_model_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_projects_priority_model_id_model_versions"), type_="foreignkey")
        for column in ("priority_stats", "priorities_refreshed_at", "priority_method", "priority_model_id"):
            batch_op.drop_column(column)
        batch_op.drop_column("handout_order")
    op.drop_index(INDEX, table_name="ranking_tasks")
    with op.batch_alter_table("ranking_tasks", schema=None) as batch_op:
        batch_op.drop_column("handout_priority")
